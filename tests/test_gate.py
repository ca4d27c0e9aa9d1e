"""The gate's statistics and verdicts on synthetic samples, history files, and the compare command.

Synthetic timings are log-normal around a median with a few slow outliers, like rounds on a shared
machine. Every random draw comes from a seeded generator, so these tests give the same answer on
every run: the rates below are measured figures, not luck.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from pytest_hpcdemo import gate
from pytest_hpcdemo.__main__ import main
from pytest_hpcdemo.gate import Outcome, Run, Series, Thresholds

HW = {"usable_cores": 2, "gil_enabled": True, "gpu": {"devices": []}, "mpi": {"world_size": 1}}
MACHINE = {"node": "box", "cpu": {"brand_raw": "cpu"}, "python_version": "3.11.7", "hpcdemo": HW}


def timings(rng: random.Random, n: int, centre: float = 0.01, sigma: float = 0.05) -> list[float]:
    """``n`` per-round seconds: log-normal noise, and one round in ten slowed by up to 30%."""
    return [centre * math.exp(rng.gauss(0, sigma)) * (1 + 0.3 * rng.random() if rng.random() < 0.1 else 1)
            for _ in range(n)]


def time_series(samples: list[float], key: str = "t::bench") -> Series:
    return Series(key, "time", tuple(samples))


def test_mann_whitney_matches_exact_small_cases() -> None:
    # Complete separation of 3 and 3: U = 0 in 1 of C(6, 3) = 20 orderings, two-sided 2/20.
    assert gate.mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert gate.mann_whitney_p(range(5), range(10, 15)) == pytest.approx(2 / 252)
    assert gate.mann_whitney_p([1, 2, 3], [1, 2, 3]) == 1.0
    assert gate.mann_whitney_p([2.0] * 50, [2.0] * 50) == 1.0  # all tied: no evidence
    assert gate.mann_whitney_p([], [1.0]) == 1.0


def test_identical_distributions_pass() -> None:
    samples = timings(random.Random(1), 40)
    change = gate.judge(time_series(samples), time_series(samples), Thresholds())
    assert change.outcome is Outcome.UNCHANGED and change.p_value == 1.0 and change.change == 0.0


def test_planted_ten_percent_slowdown_fails() -> None:
    rng = random.Random(2)
    base, slow = timings(rng, 30), timings(rng, 30, centre=0.011)
    change = gate.judge(time_series(base), time_series(slow), Thresholds())
    assert change.outcome is Outcome.REGRESSED and change.failed
    assert change.change == pytest.approx(0.10, abs=0.03) and change.p_value < 0.01
    line = change.line()
    assert line.startswith("REGRESSED") and "t::bench" in line and "p=" in line and "+" in line


def test_planted_ten_percent_slowdown_is_caught_reliably() -> None:
    """Power at 30 rounds a side, 5% log-normal noise: measured over 300 seeds."""
    caught = 0
    for seed in range(300):
        rng = random.Random(seed)
        base, slow = timings(rng, 30), timings(rng, 30, centre=0.011)
        caught += gate.judge(time_series(base), time_series(slow), Thresholds()).failed
    assert caught / 300 >= 0.95, f"caught {caught} of 300"


@pytest.mark.parametrize("rounds", [5, 30, 200])
def test_noise_alone_passes_over_many_seeds(rounds: int) -> None:
    """False alarms on unchanged code stay under alpha (1%), and the test alone (no minimum effect,
    both directions) stays at its nominal level, which shows the p-values are right. Measured over
    these 1000 seeds: 5, 1 and 0 alarms with the defaults at 5, 30 and 200 rounds (0.5%, 0.1%, 0%);
    9, 11 and 7 for the test alone."""
    seeds = 1000
    alarms = test_only = 0
    for seed in range(seeds):
        rng = random.Random(10_000 + seed)
        a, b = time_series(timings(rng, rounds)), time_series(timings(rng, rounds))
        alarms += gate.judge(a, b, Thresholds()).failed
        test_only += gate.judge(a, b, Thresholds(min_effect=0.0, both=True)).failed
    assert alarms <= {5: 5, 30: 1, 200: 0}[rounds] <= 0.01 * seeds
    assert test_only / seeds <= 0.015, f"{test_only} of {seeds} at alpha 0.01"


def test_tiny_significant_change_under_the_minimum_effect_passes() -> None:
    rng = random.Random(3)
    base, slow = timings(rng, 2000, sigma=0.01), timings(rng, 2000, centre=0.0102, sigma=0.01)
    change = gate.judge(time_series(base), time_series(slow), Thresholds())
    assert change.p_value < 1e-6 and 0 < change.change < 0.05
    assert change.outcome is Outcome.UNCHANGED and not change.failed


def test_faster_fails_only_when_both_directions_are_gated() -> None:
    rng = random.Random(4)
    base, fast = time_series(timings(rng, 30)), time_series(timings(rng, 30, centre=0.008))
    assert gate.judge(base, fast, Thresholds()).outcome is Outcome.IMPROVED
    assert not gate.judge(base, fast, Thresholds()).failed
    assert gate.judge(base, fast, Thresholds(both=True)).failed


def test_a_lower_speedup_is_a_regression() -> None:
    rng = random.Random(5)
    before = Series("t::c [x2]", "speedup", tuple(1.9 * math.exp(rng.gauss(0, 0.03)) for _ in range(10)))
    after = Series("t::c [x2]", "speedup", tuple(1.6 * math.exp(rng.gauss(0, 0.03)) for _ in range(10)))
    change = gate.judge(before, after, Thresholds())
    assert change.outcome is Outcome.REGRESSED and change.change < -0.1
    assert "median speedup 1.88x -> 1.59x (-15.3%, p=1.1e-05" in change.line()
    assert gate.judge(after, before, Thresholds()).outcome is Outcome.IMPROVED


def test_history_drift_raises_the_bar() -> None:
    """An 8% change fails against one baseline, but not where earlier unchanged runs drifted 12%."""
    rng = random.Random(6)
    history = [run_of(bench_json("t::bench", timings(rng, 30, centre=c))) for c in (0.010, 0.0112, 0.0095)]
    base, current = history[-1], run_of(bench_json("t::bench", timings(rng, 30, centre=0.0095 * 1.08)))
    assert gate.compare(base, current).failed
    raised = gate.compare(base, current, history=history)
    assert not raised.failed
    assert gate.drift(history, "t::bench") == pytest.approx(0.12, abs=0.03)
    assert gate.drift(history[:2], "t::bench") == 0.0  # too few runs to tell


def test_marker_thresholds_override_defaults() -> None:
    t = Thresholds().overridden({"min_effect": 0.5, "both": True})
    assert t == Thresholds(0.5, 0.01, True)
    with pytest.raises(ValueError, match="alpha"):
        Thresholds().overridden({"alpha": 2})


# ---------------------------------------------------------------------------------------------
# Runs, hardware and files


def bench_json(fullname: str, data: list[float], claim: tuple[list[float], list[float]] | None = None,
               gate_kw: dict[str, Any] | None = None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if claim:
        extra["claims"] = {"x2": {"baseline_s": claim[0], "candidate_s": claim[1]}}
    if gate_kw:
        extra["gate"] = gate_kw
    return {"fullname": fullname, "name": fullname, "extra_info": extra, "stats": {"data": data}}


def run_json(*benches: dict[str, Any], machine: dict[str, Any] = MACHINE) -> dict[str, Any]:
    return {"machine_info": machine, "commit_info": {}, "benchmarks": list(benches), "datetime": "now"}


def run_of(*benches: dict[str, Any], machine: dict[str, Any] = MACHINE) -> Run:
    return gate.run_from_json(run_json(*benches, machine=machine), "run")


def test_claims_give_speedup_series_and_marker_thresholds_travel() -> None:
    run = run_of(bench_json("t::c", [0.1, 0.1], ([0.2, 0.3], [0.1, 0.1]), {"min_effect": 0.3}))
    assert set(run.series) == {"t::c", "t::c [x2]"}
    assert run.series["t::c [x2]"].samples == pytest.approx((2.0, 3.0))
    rng = random.Random(7)
    slow = run_of(bench_json("t::c", [s * 1.2 for s in timings(rng, 30)], gate_kw={"min_effect": 0.3}))
    base = run_of(bench_json("t::c", timings(rng, 30)))
    assert not gate.compare(base, slow).failed  # 20% is under the test's own 30%


def test_different_hardware_is_refused() -> None:
    other = {**MACHINE, "hpcdemo": {**HW, "usable_cores": 8, "mpi": {"world_size": 4},
                                    "gpu": {"devices": ["NVIDIA H100, 81559 MiB, 9.0"]}}}
    report = gate.compare(run_of(bench_json("t::a", [1.0])), run_of(bench_json("t::a", [9.0]), machine=other))
    assert report.refused == ["usable cores 2 vs 8", "GPUs [] vs ['NVIDIA H100, 81559 MiB, 9.0']",
                              "MPI world size 1 vs 4"]
    assert not report.changes and not report.failed
    assert report.lines()[1].startswith("REFUSED: the runs come from different hardware")


def test_different_machine_gates_ratios_only() -> None:
    rng = random.Random(8)
    base = run_of(bench_json("t::c", timings(rng, 20), ([0.2] * 10, timings(rng, 10, centre=0.1))))
    other = {**MACHINE, "node": "elsewhere"}
    slower_candidate = ([0.2] * 10, timings(rng, 10, centre=0.15))
    current = run_of(bench_json("t::c", timings(rng, 20, centre=0.05), slower_candidate), machine=other)
    report = gate.compare(base, current)
    assert report.flagged == ["node 'box' vs 'elsewhere'"]
    outcomes = {c.series.key: c.outcome for c in report.changes}
    assert outcomes == {"t::c": Outcome.NOT_COMPARED, "t::c [x2]": Outcome.REGRESSED}


def save(folder: Path, name: str, data: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("text, reason", [
    ("{not json", "corrupt history file: Expecting property name"),
    ('{"benchmarks": 3}', "corrupt history file: not a pytest-benchmark run"),
    ('{"benchmarks": [{"stats": {}}]}', "corrupt history file: 'fullname'"),
])
def test_corrupt_history_is_a_one_line_error_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = save(tmp_path, "0001_bad.json", text)
    with pytest.raises(gate.HistoryError) as info:
        gate.load_run(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message


def test_storage_other_than_files_is_refused() -> None:
    assert gate.storage_path("file://./.benchmarks") == Path(".benchmarks")
    with pytest.raises(gate.HistoryError, match="file storage only"):
        gate.storage_path("elasticsearch+https://host/index")


def test_compare_command_prints_history_and_exits_on_regression(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "store" / "m"
    rng = random.Random(9)
    save(folder, "0001_a.json", run_json(bench_json("t::bench", timings(rng, 30))))
    save(folder, "0002_b.json", run_json(bench_json("t::bench", timings(rng, 30))))
    args = ["compare", "--storage", f"file://{tmp_path / 'store'}", "--machine", "m"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "runs: [0] 0001_a, [1] 0002_b" in out and "t::bench: [0] 10" in out and "gate: passed" in out
    save(folder, "0003_c.json", run_json(bench_json("t::bench", timings(rng, 30, centre=0.013))))
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "REGRESSED     t::bench: median time" in out and "gate: FAILED" in out
    assert main([*args, "0001", "0002"]) == 0  # chosen runs


def test_compare_command_refuses_a_corrupt_file_without_touching_it(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "m"
    good = save(folder, "0001_a.json", run_json(bench_json("t::bench", [0.01] * 5)))
    bad = save(folder, "0002_b.json", "{truncated")
    assert main(["compare", "--storage", str(tmp_path), "--machine", "m"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pytest-hpcdemo compare: {bad}: corrupt history file") and "\n" not in err
    assert bad.read_text() == "{truncated" and json.loads(good.read_text())["benchmarks"]
    assert main(["compare", "--storage", str(tmp_path), "--machine", "m", "0009"]) == 2
    assert "0009: no such history file" in capsys.readouterr().err


def test_compare_command_with_too_few_runs_passes(tmp_path: Path, capsys) -> None:
    assert main(["compare", "--storage", str(tmp_path), "--machine", "m"]) == 0
    assert "no saved runs" in capsys.readouterr().out


def test_runs_on_a_busy_machine_are_not_compared() -> None:
    """A slowdown measured while others took the cores says nothing about the code: reported, not
    judged; the threshold is the test's own (``busy_load``) where the marker sets one."""
    rng = random.Random(10)
    base = bench_json("t::b", timings(rng, 30))
    loaded = bench_json("t::b", timings(rng, 30, centre=0.02))
    loaded["extra_info"]["foreign_load"] = 1.4
    change = gate.compare(run_of(base), run_of(loaded)).changes[0]
    assert change.outcome is Outcome.NOT_COMPARED and not change.failed
    assert change.line().endswith("t::b: machine busy in this run: foreign load 1.40 cores > 0.5")
    loaded["extra_info"]["gate"] = {"busy_load": 2.0}
    assert gate.compare(run_of(base), run_of(loaded)).failed

    contested = bench_json("t::c", [0.1] * 5, ([0.2] * 6, [0.2] * 6))
    contested["extra_info"]["claims"]["x2"].update(rounds=6, contested_rounds=3)
    claim = bench_json("t::c", [0.1] * 5, ([0.2] * 6, [0.1] * 6))
    changes = gate.compare(run_of(claim), run_of(contested)).changes
    (speedup,) = [c for c in changes if c.series.kind == "speedup"]
    assert speedup.outcome is Outcome.NOT_COMPARED and "took the cores in 3 of 6 rounds" in speedup.note
