"""The claim summary fits a 120-column terminal, whatever the figures' length."""

from __future__ import annotations

from pytest_hpcdemo.report.claims import ClaimRecord
from pytest_hpcdemo.report.terminal import WIDTH, claim_lines

LONG = ("numba nogil threads x2: efficiency (one share serially vs 2 shares on 2): speedup 0.46 [0.28, 0.51] "
        ">= 0.675; 5 rounds; foreign load 1.72 cores (other processes took the cores this claim needs in 5 "
        "of 5 rounds (foreign load 1.72 cores, 2 of 2 needed)); peak RSS 257 / 257 MiB")


def test_every_line_fits_and_no_figure_is_lost() -> None:
    records = [ClaimRecord("benchmarks/test_scaling.py::test_numba_nogil_threads_scale_to_the_node[x2]", "",
                           LONG, "inconclusive"),
               ClaimRecord("t.py::test_a", "", "half: speedup 1.57 [1.34, 2.28] >= 1.3; 5 rounds", "holds"),
               ClaimRecord("t.py::test_b", "the claim in words")]
    lines = list(claim_lines(records))
    assert all(len(line) <= WIDTH for line in lines)
    assert lines[0].startswith("INCONCLUSIVE benchmarks/test_scaling.py::test_numba_nogil")
    words = " ".join(line.strip() for line in lines).split()
    assert all(word in words for word in LONG.split())
    assert any(line.startswith("HOLDS        t.py::test_a") and "half: speedup 1.57" in line
               for line in lines)
    assert lines[-1].startswith("NOT RUN      t.py::test_b") and lines[-1].endswith("the claim in words")


def test_short_claims_stay_on_one_line() -> None:
    (line,) = claim_lines([ClaimRecord("t.py::test_a", "", "2 + 2 = 4", "holds")])
    assert line == "HOLDS        t.py::test_a  2 + 2 = 4"
