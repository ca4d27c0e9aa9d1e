"""``pytest-hpcdemo continuous``: the paired comparison on synthetic sessions (drift between
sessions, planted slow-downs, claims either way round, missing series), its arguments, and one real
run over a small generated git repository (tests/bench_repo.py).

Synthetic sessions come from seeded generators: the rates below are measured figures, not luck.
"""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from bench_repo import make_repo  # tests/ is on sys.path (pytest's rootdir-less "prepend" import)

from pytest_hpcdemo.__main__ import main
from pytest_hpcdemo.gate import continuous
from pytest_hpcdemo.gate.continuous import Figure, compare_sessions, session_figures, session_order
from pytest_hpcdemo.gate.history import Outcome


def sessions(rng: random.Random, pairs: int, count: int, slowed: dict[int, float] | None = None,
             drift: float = 0.17, jitter: float = 0.04, noise: float = 0.03
             ) -> list[tuple[dict[str, Figure], dict[str, Figure]]]:
    """Session pairs of ``count`` benchmarks on a drifting machine: the level of the moment moves
    by up to ``drift`` from pair to pair (both sessions of a pair run seconds apart and share it),
    each session's times move together by ``jitter`` more, each benchmark by its own ``noise``;
    ``slowed`` benchmarks take that factor longer in head."""
    slowed = slowed or {}
    out = []
    for _ in range(pairs):
        level = math.exp(rng.uniform(-drift, drift))
        pair = []
        for side in ("base", "head"):
            shift = level * math.exp(rng.gauss(0, jitter))
            pair.append({f"t::{i}": Figure(0.001 * shift * math.exp(rng.gauss(0, noise))
                                           * (slowed.get(i, 1.0) if side == "head" else 1.0), "time", False)
                         for i in range(count)})
        out.append((pair[0], pair[1]))
    return out


def test_sessions_alternate_so_that_a_trend_falls_on_both() -> None:
    assert session_order(3) == [(0, "base"), (0, "head"), (1, "head"), (1, "base"), (2, "base"), (2, "head")]


def test_unchanged_pairs_raise_no_alarm_over_many_runs() -> None:
    """60 unchanged runs of 24 benchmarks, 10 pairs, drift up to 17% between pairs: no run flags
    anything (measured 0 of 100)."""
    alarmed = 0
    for seed in range(60):
        changes = compare_sessions(sessions(random.Random(seed), 10, 24))
        alarmed += any(c.failed(both=True) for c in changes)
    assert alarmed <= 1, f"{alarmed} of 60 runs"


def test_a_planted_25_percent_slow_down_is_flagged() -> None:
    """3 of 24 benchmarks 25% slower, 10 pairs (the default), 17% drift between pairs: all 3 found
    in every one of 50 runs (measured), nothing else."""
    for seed in range(50):
        slowed = {2: 1.25, 10: 1.25, 18: 1.25}
        changes = compare_sessions(sessions(random.Random(1000 + seed), 10, 24, slowed))
        flagged = sorted(c.key for c in changes if c.outcome is Outcome.REGRESSED)
        assert flagged == ["t::10", "t::18", "t::2"], f"seed {seed}: {flagged}"
    line = next(c.line() for c in changes if c.key == "t::2")
    assert line.startswith("REGRESSED     t::2: time base 1") and ", head 1.2" in line
    assert "over 24 series" in line
    assert "detectable" in line and "lower is better" in line and "10 pairs" in line


def test_claims_are_gated_their_own_way_round() -> None:
    rng = random.Random(7)
    pairs = []
    for _ in range(6):
        base = {"t::c [x] speedup >=": Figure(1.9 * math.exp(rng.gauss(0, 0.02)), "speedup", True),
                "t::c [x] speedup <=": Figure(1.0 * math.exp(rng.gauss(0, 0.02)), "speedup", False)}
        head = {"t::c [x] speedup >=": Figure(1.5 * math.exp(rng.gauss(0, 0.02)), "speedup", True),
                "t::c [x] speedup <=": Figure(1.5 * math.exp(rng.gauss(0, 0.02)), "speedup", False)}
        pairs.append((base, head))
    outcomes = {c.key: c.outcome for c in compare_sessions(pairs)}
    assert outcomes == {"t::c [x] speedup >=": Outcome.REGRESSED, "t::c [x] speedup <=": Outcome.REGRESSED}
    flipped = {c.key: c.outcome for c in compare_sessions([(h, b) for b, h in pairs])}
    assert set(flipped.values()) == {Outcome.IMPROVED}


def test_series_missing_from_one_side_are_named() -> None:
    pairs = sessions(random.Random(3), 4, 2)
    for base, head in pairs:
        del head["t::1"]
        head["t::new"] = base["t::0"]
    pairs[0][1]["t::0"] = pairs[0][0]["t::0"]
    lines = {c.key: (c.outcome, c.line()) for c in compare_sessions(pairs)}
    assert lines["t::1"][0] is Outcome.NOT_COMPARED and "not in head's sessions" in lines["t::1"][1]
    assert lines["t::new"][0] is Outcome.NEW


def test_session_figures_from_pytest_benchmark_json() -> None:
    data = {"machine_info": {}, "benchmarks": [
        {"fullname": "t::a", "stats": {"min": 0.002, "median": 0.003}},
        {"fullname": "t::bad", "stats": {"min": float("nan")}},
        {"fullname": "t::c", "stats": {"min": 0.1}, "extra_info": {"claims": {"x": {
            "claims": [{"claim": "parallelism <= 1.2"}], "per_round": {"parallelism": [1.0, 1.02, 1.01]}}}}},
    ]}
    figures = session_figures(data)
    assert figures["t::a"] == Figure(0.003, "time", False) and "t::bad" not in figures
    assert session_figures(data, "min")["t::a"] == Figure(0.002, "time", False)
    assert figures["t::c [x] parallelism <="] == Figure(1.01, "parallelism", False)
    with pytest.raises(ValueError, match="machine_info is not an object"):
        session_figures({"benchmarks": [], "machine_info": 3})


@pytest.mark.parametrize("args, message", [
    (["continuous", "no-such-rev"], "no-such-rev: no such revision"),
    (["continuous", ""], "'': not a revision"),
])
def test_bad_revisions_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, args: list[str],
                              message: str) -> None:
    make_repo(tmp_path / "repo", 2)
    monkeypatch.chdir(tmp_path / "repo")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_outside_a_repository_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["continuous", "HEAD"]) == 2
    assert "is not inside a git repository" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--pairs=1", "--pairs=x", "--min-effect=150%", "--alpha=0.7",
                                    "--session-timeout=0"])
def test_bad_options_exit_2(option: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["continuous", "HEAD", option])
    assert info.value.code == 2 and option.split("=")[0] in capsys.readouterr().err


def test_a_session_that_cannot_run_exits_2_and_leaves_no_worktree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo(tmp_path / "repo", 2)
    monkeypatch.chdir(repo)
    assert main(["continuous", "HEAD~1", "--pairs=3", "--", "--no-such-option"]) == 2
    assert "exited 4" in capsys.readouterr().err
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1


def test_a_real_run_flags_the_slowed_benchmark_of_the_revision_under_test(tmp_path: Path) -> None:
    """Three benchmarks, the first five times slower in HEAD, 8 session pairs: exit 1 naming it
    (the power to find small changes is measured on synthetic sessions above; here the whole path:
    worktrees, sessions, the report, the exit status, nothing left behind). 4 pairs missed it once in
    CI: with 3 degrees of freedom one pair slowed by load left q = 0.022 against alpha 0.01.
    A decoy ``benchwork`` first on PYTHONPATH (an installed copy) must not be what the sessions
    import: each session puts its own worktree first."""
    repo = make_repo(tmp_path / "repo", 3, slowed=[0], factor=5.0)
    decoy = tmp_path / "installed"
    decoy.mkdir()
    (decoy / "benchwork.py").write_text("raise ImportError('the installed copy shadowed the worktree')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(decoy), os.environ.get("PYTHONPATH", "")])}
    report = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "pytest_hpcdemo", "continuous", "HEAD~1", "HEAD", "--pairs=8",
         f"--hpc-report={report}", "--", "--benchmark-max-time=0.05"],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "REGRESSED     test_bench.py::test_kernel[0]: time base" in out
    assert "continuous: FAILED:" in out and "16 sessions in" in out
    assert (report / "continuous.txt").read_text().count("test_kernel[") == 3
    assert (report / "summary.md").is_file()  # the last head session's report, as for a run
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1


def test_continuous_cli_defaults_are_the_documented_ones() -> None:
    assert continuous.DEFAULT_PAIRS == 10 and continuous.DEFAULT_MIN_EFFECT == 0.10


def test_a_folder_the_base_revision_lacks_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo", 2)
    (repo / "newdir").mkdir()
    (repo / "newdir" / "keep").write_text("")
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "new folder"], cwd=repo, check=True)
    monkeypatch.chdir(repo / "newdir")
    assert main(["continuous", "HEAD~2", "--pairs=3"]) == 2
    assert "newdir: no such folder in this revision" in capsys.readouterr().err
