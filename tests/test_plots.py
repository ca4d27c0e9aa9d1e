"""The report's plots and summary from synthetic runs: Amdahl fit, files written, matplotlib missing."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from pytest_hpcdemo.gate import history
from pytest_hpcdemo.report import plots
from pytest_hpcdemo.report.claims import ClaimRecord
from pytest_hpcdemo.report.html import timing_claim_rows, write_report

with contextlib.suppress(ImportError):  # the fit's tests skip without SciPy
    # Loaded at collection: a pytester run in this process may drop a NumPy it first imported.
    import scipy.optimize  # noqa: F401

PNG = b"\x89PNG\r\n\x1a\n"


def scaling_bench(backend: str, workers: int, speedup: float) -> dict:
    return {"fullname": f"b.py::test_{backend}[x{workers}]", "stats": {"data": [0.1, 0.11, 0.1]},
            "extra_info": {
                "scaling": {"workload": "cpu", "backend": backend, "workers": workers, "speedup": speedup,
                            "ci": [speedup * 0.95, speedup * 1.05]},
                "claims": {f"{backend} x{workers}": {
                    "baseline_s": [0.2, 0.2], "candidate_s": [0.2 / speedup] * 2,
                    "claims": [{"claim": "speedup >= 1.35", "median": speedup, "ci_low": speedup * 0.95,
                                "ci_high": speedup * 1.05, "verdict": "holds"}]}},
            }}


def run_with_scaling(label: str = "run") -> history.Run:
    f = 0.2
    benches = [scaling_bench("processes", n, plots.amdahl_speedup(f, n)) for n in (1, 2, 4)]
    benches += [scaling_bench("threads", n, 1.0) for n in (1, 2)]
    return history.run_from_json({"machine_info": {}, "benchmarks": benches}, label)


def test_amdahl_fit_recovers_the_serial_fraction() -> None:
    pytest.importorskip("scipy", reason="the Amdahl fit needs: pip install 'pytest-hpcdemo[report]'")
    points = [(n, plots.amdahl_speedup(0.2, n)) for n in (1, 2, 4, 8)]
    assert plots.amdahl_serial_fraction(points) == pytest.approx(0.2)
    assert plots.amdahl_serial_fraction([(n, 1.0) for n in (1, 2, 4)]) == pytest.approx(1.0, abs=1e-3)
    assert plots.amdahl_serial_fraction([(n, float(n)) for n in (1, 2, 4)]) == pytest.approx(0.0, abs=1e-4)
    assert plots.amdahl_serial_fraction([(1, 0.97)]) is None  # one worker says nothing about f


def test_one_run_is_no_history(tmp_path: Path) -> None:
    """The main job's first run has nothing to compare: no history plot (it drew one point per series
    under a legend of a hundred names)."""
    pytest.importorskip("matplotlib", reason="the report's plots need: pip install 'pytest-hpcdemo[report]'")
    written = write_report(tmp_path / "rep", run_with_scaling("this run"), [], None, [])
    assert "history.png" not in [p.name for p in written]


def test_report_writes_plots_and_summary(tmp_path: Path) -> None:
    current = run_with_scaling("this run")
    claims = [ClaimRecord("b.py::test_processes[x2]", "", "speedup 1.67 [1.6, 1.7] >= 1.35", "holds")]
    written = write_report(tmp_path / "rep", current, [run_with_scaling("0001_old")], None, claims)
    names = [p.name for p in written]
    assert names == ["summary.md", "summary.html", "scaling-cpu-processes.png", "scaling-cpu-threads.png",
                     "history.png"]
    for path in written[2:]:
        assert path.read_bytes().startswith(PNG) and path.stat().st_size > 10_000
    md = written[0].read_text()
    assert "cpu on processes: Amdahl serial fraction 0.20" in md
    assert "cpu on threads: Amdahl serial fraction 1.00" in md
    assert "| holds | b.py::test_processes[x2] | speedup 1.67 [1.6, 1.7] >= 1.35 |" in md
    assert "| b.py::test_processes[x2] | processes x2 | speedup 1.67 [1.58, 1.75] | >= 1.35 | holds |" in md
    assert "<img src='scaling-cpu-processes.png'>" in written[1].read_text()


def test_report_without_matplotlib_still_writes_the_summary(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    written = write_report(tmp_path, run_with_scaling(), [], None, [])
    assert [p.name for p in written] == ["summary.md", "summary.html"]
    assert f"> plots skipped: {plots.MISSING}" in written[0].read_text()


def test_claim_without_clean_rounds_says_so() -> None:
    bench = scaling_bench("processes", 2, 1.0)
    bench["extra_info"]["claims"]["processes x2"]["claims"][0].update(
        median=float("nan"), ci_low=float("nan"), ci_high=float("nan"), verdict="inconclusive")
    (row,) = timing_claim_rows(history.run_from_json({"benchmarks": [bench]}, "run"))
    loaded = "speedup: no round free of other processes' load (Claims: the loaded rounds)"
    assert row[2:] == (loaded, ">= 1.35", "inconclusive")


def test_contested_points_are_drawn_but_not_fitted(tmp_path: Path) -> None:
    points = [{"workers": 1, "speedup": 1.0}, {"workers": 2, "speedup": 1.9},
              {"workers": 4, "speedup": 1.1, "contested": True}]
    fraction = plots.scaling_plot("t", points, tmp_path / "s.png")
    assert fraction == pytest.approx(plots.amdahl_serial_fraction([(2, 1.9)]))
    assert (tmp_path / "s.png").read_bytes().startswith(PNG)


def test_the_scaling_table_states_the_pool_ideal_share_and_hides_a_loaded_serial_fraction() -> None:
    from pytest_hpcdemo.report.html import scaling_rows

    full = {"workers": 2, "speedup": 1.8, "ci": [1.7, 1.9], "efficiency": 0.9, "efficiency_ci": [0.85, 0.95],
            "karp_flatt": 0.11, "karp_flatt_ci": [0.05, 0.17], "fraction_of_pool_ideal": 0.95,
            "pool_ideal": 1.9}
    loaded = {"workers": 1, "speedup": 0.7, "karp_flatt": 1.4, "contested": True}
    rows = scaling_rows({("cpu", "processes"): [full, loaded]})
    assert rows[0][4:6] == ("", "- (loaded)") and rows[0][-1] == "others took the cores"
    assert rows[1][4:6] == ("95% of 1.90x", "0.110 [0.050, 0.170]")
