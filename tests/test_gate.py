"""The gate's statistics and verdicts on synthetic samples, history files, and the compare command.

Synthetic timings are log-normal around a median with a few slow outliers, like rounds on a shared
machine. Every random draw comes from a seeded generator, so these tests give the same answer on
every run: the rates below are measured figures, not luck.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_hpcdemo.__main__ import main
from pytest_hpcdemo.core import figures
from pytest_hpcdemo.gate import history as gate
from pytest_hpcdemo.gate.history import Outcome, Run, Series, Thresholds

HW = {"usable_cores": 2, "gil_enabled": True, "gpu": {"devices": []}, "mpi": {"world_size": 1}}
MACHINE = {"node": "box", "cpu": {"brand_raw": "cpu"}, "python_version": "3.11.7", "hpcdemo": HW}


def timings(rng: random.Random, n: int, centre: float = 0.01, sigma: float = 0.05) -> list[float]:
    """``n`` per-round seconds: log-normal noise, and one round in ten slowed by up to 30%."""
    return [centre * math.exp(rng.gauss(0, sigma)) * (1 + 0.3 * rng.random() if rng.random() < 0.1 else 1)
            for _ in range(n)]


def time_series(samples: list[float], key: str = "t::bench") -> Series:
    return Series(key, "time", tuple(samples))


def test_mann_whitney_is_scipys_exact_test_on_small_cases() -> None:
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
        change = gate.judge(a, b, Thresholds())
        alarms += change.failed
        loose = replace(change, thresholds=Thresholds(min_effect=0.0, both=True))
        test_only += loose.decided(change.p_value, 1).failed
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
    before = Series("t::c [x2] speedup >=", "speedup",
                    tuple(1.9 * math.exp(rng.gauss(0, 0.03)) for _ in range(10)), higher_is_better=True)
    after = replace(before, samples=tuple(1.6 * math.exp(rng.gauss(0, 0.03)) for _ in range(10)))
    change = gate.judge(before, after, Thresholds())
    assert change.outcome is Outcome.REGRESSED and change.change < -0.1
    assert "median speedup 1.88x -> 1.59x (-15.3%, p=0.00018, detectable 5%" in change.line()
    assert "higher is better" in change.line()
    assert gate.judge(after, before, Thresholds()).outcome is Outcome.IMPROVED


def test_each_claim_is_gated_its_own_way_round() -> None:
    """A plugin-cost ratio claimed ``at_most`` rising from 1.0 to 1.5 is a regression, and falling
    back an improvement; a parallelism claim is gated on parallelism, not on wall time."""
    def run(cost: float, parallelism: float) -> Run:
        rng = random.Random(int(cost * 10 + parallelism))
        figures = {"claims": [{"claim": "speedup <= 2", "verdict": "holds", "median": cost},
                              {"metric": "parallelism", "operator": ">=", "threshold": 1.5}],
                   "baseline_s": [0.1] * 12, "candidate_s": [0.1 / cost] * 12,
                   "per_round": {"parallelism": [parallelism * math.exp(rng.gauss(0, 0.02))
                                                 for _ in range(12)]}}
        bench = bench_json("t::p", [0.01] * 12)
        bench["extra_info"]["claims"] = {"cost": figures}
        return run_of(bench)

    cost, par = "t::p [cost] speedup <=", "t::p [cost] parallelism >="
    assert set(run(1.0, 1.9).series) == {"t::p", cost, par}
    assert not run(1.0, 1.9).series[cost].higher_is_better and run(1.0, 1.9).series[par].higher_is_better
    worse = {c.series.key: c for c in gate.compare(run(1.0, 1.9), run(1.5, 1.9)).changes}
    assert worse[cost].outcome is Outcome.REGRESSED and worse[par].outcome is Outcome.UNCHANGED
    better = {c.series.key: c for c in gate.compare(run(1.5, 1.9), run(1.0, 1.9)).changes}
    assert better[cost].outcome is Outcome.IMPROVED and not better[cost].failed
    lost = {c.series.key: c for c in gate.compare(run(1.0, 1.9), run(1.0, 1.2)).changes}
    assert lost[par].outcome is Outcome.REGRESSED and "median parallelism 1.9" in lost[par].line()


def test_an_unchanged_run_of_many_series_raises_a_false_alarm_at_most_alpha() -> None:
    """25 unchanged series a run, 60 runs, min effect 0 and both directions (the test alone) at a
    loose alpha of 0.2, so that 60 runs can show the rate: judged together, runs with any false
    alarm stay under alpha (measured 4 of 60); one by one at alpha they would be about
    1 - 0.8**25 = 99.6% (measured 60 of 60)."""
    alarmed = separately = 0
    loose = Thresholds(min_effect=0.0, alpha=0.2, both=True)
    for seed in range(60):
        rng = random.Random(50_000 + seed)
        pairs = [(timings(rng, 6), timings(rng, 6)) for _ in range(25)]
        base = Run("a", MACHINE, {f"t::{i}": time_series(a, f"t::{i}") for i, (a, _) in enumerate(pairs)})
        cur = Run("b", MACHINE, {f"t::{i}": time_series(b, f"t::{i}") for i, (_, b) in enumerate(pairs)})
        report = gate.compare(base, cur, loose)
        alarmed += report.failed
        separately += any(c.p_value < 0.2 for c in report.changes)
    assert alarmed <= 0.2 * 60, f"{alarmed} of 60 runs"
    assert separately >= 55, f"{separately} of 60 runs"


def test_a_real_change_among_many_unchanged_series_is_still_found() -> None:
    rng = random.Random(11)
    base = {f"t::{i}": time_series(timings(rng, 30), f"t::{i}") for i in range(40)}
    cur = {f"t::{i}": time_series(timings(rng, 30, centre=0.0125 if i == 7 else 0.01), f"t::{i}")
           for i in range(40)}
    report = gate.compare(Run("a", MACHINE, base), Run("b", MACHINE, cur))
    assert [c.series.key for c in report.failures] == ["t::7"]
    (line,) = [x for x in report.lines() if x.startswith("REGRESSED")]
    assert "over 40 series" in line and "detectable" in line
    assert report.lines()[-1].endswith("40 compared series judged together (Benjamini-Hochberg)")


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


@pytest.mark.parametrize("changes, message", [
    ({"min_effect": 1.5}, r"min_effect must be a fraction in \[0, 1\)"),
    ({"both": "yes"}, "both must be True or False, got 'yes'"),
    ({"busy_load": "x"}, "busy_load must be a number of cores >= 0, got 'x'"),
    ({"alpha": True}, "alpha must be a probability"),
])
def test_thresholds_are_checked_for_meaning(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds().overridden(changes)


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
    assert set(run.series) == {"t::c", "t::c [x2] speedup >="}
    assert run.series["t::c [x2] speedup >="].samples == pytest.approx((2.0, 3.0))
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
    assert outcomes == {"t::c": Outcome.NOT_COMPARED, "t::c [x2] speedup >=": Outcome.REGRESSED}


def save(folder: Path, name: str, data: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize("text, reason", [
    ("{not json", "corrupt history file: Expecting property name"),
    ('{"benchmarks": 3}', "corrupt history file: not a pytest-benchmark run"),
    ('{"benchmarks": [{"stats": {}}]}', "corrupt history file: benchmark entry 0 has no 'fullname'"),
    ('{"benchmarks": [], "machine_info": []}', "corrupt history file: machine_info is not an object"),
    ('{"benchmarks": [{"fullname": "t", "stats": 3}]}', "corrupt history file: t: stats is not an object"),
    ('{"benchmarks": [{"fullname": "t", "extra_info": {"gate": {"both": "yes"}}}]}',
     "corrupt history file: t: gate thresholds: both must be True or False"),
])
def test_corrupt_history_is_a_one_line_error_naming_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = save(tmp_path, "0001_bad.json", text)
    with pytest.raises(gate.HistoryError) as info:
        gate.load_run(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {reason}") and "\n" not in message


# A run as the plugin saved it before runs carried a schema version (schema 1): no "hpcdemo_schema".
OLD_RUN = """{"machine_info": {"node": "box", "cpu": {"brand_raw": "cpu"}, "python_version": "3.11.7",
  "hpcdemo": {"usable_cores": 2, "gil_enabled": true, "gpu": {"devices": []}, "mpi": {"world_size": 1}},
  "hpcdemo_fingerprint": {"cpu_model": "cpu", "physical_cores": 2}},
 "commit_info": {}, "datetime": "2026-11-30T10:00:00", "version": "5.1.0",
 "benchmarks": [{"fullname": "benchmarks/test_gil.py::test_threads", "name": "test_threads",
   "stats": {"data": [0.10, 0.11, 0.10, 0.12, 0.10]},
   "extra_info": {"foreign_load": 0.1, "own_cpu": 1.9, "claims": {"threads": {
     "rounds": 5, "contested_rounds": 0, "baseline_s": [0.2, 0.2, 0.2, 0.2, 0.2],
     "candidate_s": [0.10, 0.11, 0.10, 0.12, 0.10],
     "claims": [{"claim": "speedup >= 1.3", "verdict": "holds"}]}}}}]}"""


def test_old_histories_read_and_newer_schemas_are_refused(tmp_path: Path) -> None:
    """Runs without a schema version are schema 1 and compare with today's; a run saved in a
    schema newer than core/figures.py knows is a one-line error, not a misread."""
    old = gate.load_run(save(tmp_path, "0001_old.json", OLD_RUN))
    assert figures.schema_version(old.machine_info) == 1
    assert set(old.series) == {"benchmarks/test_gil.py::test_threads",
                               "benchmarks/test_gil.py::test_threads [threads] speedup >="}
    current = json.loads(OLD_RUN)
    figures.stamp(current["machine_info"])
    assert current["machine_info"]["hpcdemo_schema"] == figures.SCHEMA_VERSION
    report = gate.compare(old, gate.run_from_json(current, "now"))
    assert not report.refused and not report.failed and len(report.changes) == 2
    current["machine_info"]["hpcdemo_schema"] = figures.SCHEMA_VERSION + 1
    path = save(tmp_path, "0002_new.json", current)
    with pytest.raises(gate.HistoryError) as info:
        gate.load_run(path)
    assert str(info.value) == (f"{path}: history file of another format: saved in schema "
                               f"{figures.SCHEMA_VERSION + 1} by a newer pytest-hpcdemo; this one reads "
                               f"schemas 1 to {figures.SCHEMA_VERSION}: upgrade it")


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
    assert main(["compare", "--storage", str(tmp_path), "--machine", "m", "0002"]) == 2  # named: refused
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"pytest-hpcdemo compare: {bad}: corrupt history file") and "\n" not in err
    assert bad.read_text() == "{truncated" and json.loads(good.read_text())["benchmarks"]
    assert main(["compare", "--storage", str(tmp_path), "--machine", "m"]) == 0  # the history: skipped
    captured = capsys.readouterr()
    assert captured.err.startswith(f"pytest-hpcdemo compare: skipped {bad}: corrupt history file")
    assert "one run only" in captured.out
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


def test_a_waiting_benchmark_is_compared_whatever_the_load() -> None:
    """A sleep needs no core: 10 ms -> 13 ms measured while others took 1.86 cores is a regression,
    where the same load on a CPU-bound benchmark leaves it not compared."""
    rng = random.Random(12)
    base = bench_json("t::sleep", timings(rng, 30, sigma=0.01))
    slow = bench_json("t::sleep", timings(rng, 30, centre=0.013, sigma=0.01))
    for b in (base, slow):
        b["extra_info"].update(foreign_load=1.86, own_cpu=0.01)
    (change,) = gate.compare(run_of(base), run_of(slow)).changes
    assert change.outcome is Outcome.REGRESSED
    for b in (base, slow):
        b["extra_info"]["own_cpu"] = 0.98
    (change,) = gate.compare(run_of(base), run_of(slow)).changes
    assert change.outcome is Outcome.NOT_COMPARED and "foreign load 1.86 cores" in change.note


def test_most_series_not_compared_is_shouted_in_the_closing_line() -> None:
    rng = random.Random(13)
    benches = [bench_json(f"t::{i}", timings(rng, 10)) for i in range(4)]
    loaded = [bench_json(f"t::{i}", timings(rng, 10)) for i in range(4)]
    for b in loaded[:3]:
        b["extra_info"]["foreign_load"] = 1.2
    report = gate.compare(run_of(*benches), run_of(*loaded))
    assert report.not_compared == 3 and report.mostly_not_compared and not report.failed
    assert report.lines()[-2] == "gate: passed: 3 not compared, 1 unchanged"
    assert report.lines()[-1].startswith("WARNING: MOST SERIES WERE NOT COMPARED (3 of 4)")
    assert not gate.compare(run_of(*benches), run_of(*benches)).mostly_not_compared


@pytest.mark.parametrize("data, reason", [
    (None, "the baseline: no raw timings (stats.data) saved"),
    ([0.01, float("nan"), 0.01], "the baseline: 1 of 3 raw timings (stats.data) are not numbers, NaN"),
    ([0.01, -0.01, 0.01], "the baseline: 1 of 3 raw timings (stats.data) are not numbers, NaN"),
    ("0.01", "the baseline: raw timings (stats.data) is not a list"),
])
def test_malformed_samples_are_not_compared_with_the_true_reason(data: Any, reason: str) -> None:
    base = bench_json("t::b", [0.01] * 3)
    base["stats"] = {} if data is None else {"data": data}
    (change,) = gate.compare(run_of(base), run_of(bench_json("t::b", [0.02] * 3))).changes
    assert change.outcome is Outcome.NOT_COMPARED and change.note.startswith(reason)


def saved_history(folder: Path, n: int) -> list[Path]:
    rng = random.Random(14)
    return [save(folder, f"{i:04}_run.json", run_json(bench_json("t::b", timings(rng, 5))))
            for i in range(1, n + 1)]


@pytest.mark.parametrize("spec, error", [
    ("", "an empty run name"),
    ("0", "0: no such history file"),
    ("*", "baseline '*' matches 3 saved runs (0001_run, 0002_run, 0003_run): name exactly one"),
    ("00", "00: no such history file"),  # a number, not a prefix
    ("0*", "baseline '0*' matches 3 saved runs"),
])
def test_a_baseline_must_name_exactly_one_run(tmp_path: Path, spec: str, error: str) -> None:
    saved_history(tmp_path / "m", 3)
    with pytest.raises(gate.HistoryError, match=re.escape(error)):
        gate.resolve_one(spec, tmp_path, "m")


def test_a_baseline_by_number_prefix_or_file(tmp_path: Path) -> None:
    files = saved_history(tmp_path / "m", 3)
    assert [gate.resolve_one(s, tmp_path, "m") for s in ("2", "0002", "0002_r", "0002_run*", str(files[1]))] \
        == [files[1]] * 5


def test_unreadable_files_other_than_the_baseline_are_skipped_with_a_warning(tmp_path: Path) -> None:
    files = saved_history(tmp_path / "m", 2)
    bad = save(tmp_path / "m", "0003_half.json", '{"benchmarks": [')
    empty = save(tmp_path / "m", "0004_empty.json", "")
    runs, warnings = gate.load_history(gate.saved_runs(tmp_path, "m"), keep=files[1])
    assert [r.label for r in runs] == ["0001_run", "0002_run"]
    assert [w.split(": ")[0] for w in warnings] == [f"skipped {bad}", f"skipped {empty}"]
    with pytest.raises(gate.HistoryError, match=r"0003_half\.json: corrupt history file"):
        gate.load_history(gate.saved_runs(tmp_path, "m"), keep=bad)


def test_folders_are_checked_before_use(tmp_path: Path) -> None:
    taken = save(tmp_path, "taken", "x")
    message = f"--benchmark-storage {taken}: {taken} exists and is not a folder"
    with pytest.raises(gate.HistoryError, match=re.escape(message)):
        gate.check_folder(taken, "--benchmark-storage", write=False)
    with pytest.raises(gate.HistoryError, match="exists and is not a folder"):
        gate.check_folder(taken / "sub", "--hpc-report", write=True)
    gate.check_folder(tmp_path / "new" / "deep", "--hpc-report", write=True)
    assert (tmp_path / "new" / "deep").is_dir() and not list((tmp_path / "new" / "deep").iterdir())


def test_saves_are_exclusive_and_leave_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """16 threads saving into one folder at once take 16 distinct numbers, each file whole; a save
    that fails while writing (a full disk) leaves nothing behind."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [json.dumps(run_json(bench_json(f"t::{i}", [0.01] * 200))) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        paths = list(pool.map(lambda t: gate.save_exclusive(tmp_path, "run", t), texts))
    assert sorted(p.name for p in paths) == [f"{i:04}_run.json" for i in range(1, 17)]
    assert sorted(p.read_text() for p in paths) == sorted(texts)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{i:04}_run.json" for i in range(1, 17)]

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gate.os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        gate.save_exclusive(tmp_path, "full", texts[0])
    assert len(list(tmp_path.iterdir())) == 16


@pytest.mark.parametrize("args, message", [
    (["--min-effect", "150%"], "--min-effect: must be a fraction in [0, 1) (under 100%), got '150%'"),
    (["--alpha", "0.7"], "--alpha: must be a probability above 0 and below 0.5, got '0.7'"),
])
def test_compare_command_checks_thresholds_as_the_plugin_does(tmp_path: Path, capsys, args: list[str],
                                                               message: str) -> None:
    """gate/options.py defines them for both: the same checks, the same one-line message, exit 2."""
    with pytest.raises(SystemExit) as info:
        main(["compare", "--storage", str(tmp_path), "--machine", "m", *args])
    assert info.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["0"], "0: no such history file"),
    ([""], "an empty run name"),
])
def test_compare_command_rejects_bad_values(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    saved_history(tmp_path / "m", 2)
    assert main(["compare", "--storage", str(tmp_path), "--machine", "m", *args]) == 2
    assert message in capsys.readouterr().err


def test_compare_command_on_a_storage_that_is_a_file_or_a_malformed_run(tmp_path: Path, capsys) -> None:
    taken = save(tmp_path, "taken", "x")
    assert main(["compare", "--storage", str(taken), "--machine", "m"]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    save(tmp_path / "s" / "m", "0001_a.json", {"benchmarks": [], "machine_info": "box"})
    assert main(["compare", "--storage", str(tmp_path / "s"), "--machine", "m", "1"]) == 2
    assert "0001_a.json: corrupt history file: machine_info is not an object" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Memory: each claim's peak RSS growth per side, gated like its time

MIB = 2**20


def growths(rng: random.Random, n: int, centre_mib: float) -> list[int]:
    """``n`` calls' peak RSS growth: the claim's own allocation, a few pages of jitter, and now and
    then one allocator arena more (what unchanged code does from call to call)."""
    return [int(centre_mib * MIB + rng.randrange(0, 64) * 4096 + (MIB if rng.random() < 0.2 else 0))
            for _ in range(n)]


def memory_bench(baseline: list[int], candidate: list[int], load: float | None = None) -> dict[str, Any]:
    bench = bench_json("t::m", [0.1] * len(candidate))
    bench["extra_info"]["claims"] = {"x2": {
        "memory": {"baseline_rss_growth_per_call": baseline, "candidate_rss_growth_per_call": candidate,
                   "baseline_peak_rss_bytes": max(baseline), "candidate_peak_rss_bytes": max(candidate)}}}
    if load is not None:
        bench["extra_info"].update(foreign_load=load, own_cpu=1.0)
    return bench


def memory_outcomes(report: gate.GateReport) -> dict[str, Outcome]:
    return {c.series.key: c.outcome for c in report.changes if c.series.kind == gate.MEMORY}


def test_each_claim_side_gives_a_memory_series_lower_is_better() -> None:
    run = run_of(memory_bench([MIB] * 3, [2 * MIB] * 3))
    side = run.series["t::m [x2] peak RSS growth (candidate)"]
    assert side.kind == gate.MEMORY and not side.higher_is_better and side.samples == (2 * MIB,) * 3
    assert "t::m [x2] peak RSS growth (baseline)" in run.series
    old = run_of(bench_json("t::m", [0.1], ([0.2], [0.1])))  # saved before memory was recorded
    assert all(s.kind != gate.MEMORY for s in old.series.values())


def test_a_planted_memory_regression_is_flagged_and_says_its_bar() -> None:
    """The candidate side allocates 64 MiB more (a copy more of a 64 MiB array), the baseline side
    is unchanged: only the candidate's memory series fails, in each of 50 seeded runs."""
    for seed in range(50):
        rng = random.Random(seed)
        base = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 64)))
        current = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 128)))
        report = gate.compare(base, current)
        assert memory_outcomes(report) == {"t::m [x2] peak RSS growth (baseline)": Outcome.UNCHANGED,
                                           "t::m [x2] peak RSS growth (candidate)": Outcome.REGRESSED}, seed
        assert report.failed
    line = next(c.line() for c in report.changes if c.outcome is Outcome.REGRESSED)
    assert "median peak RSS growth 64." in line and "-> 128." in line and "lower is better" in line
    assert re.search(r"and at least 1\.\d MiB \(memory_floor\)", line), line


def test_unchanged_memory_raises_no_alarm_over_many_runs() -> None:
    """The same allocations in both runs, arena jitter and all: no memory series fails in 200
    seeded runs, although each run's calls differ by up to one arena."""
    for seed in range(200):
        rng = random.Random(10_000 + seed)
        base = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 64)))
        current = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 64)))
        assert set(memory_outcomes(gate.compare(base, current)).values()) == {Outcome.UNCHANGED}, seed


def test_a_significant_change_of_one_arena_is_not_a_regression() -> None:
    """2 MiB -> 3 MiB every call: +50%, significant, but no more than one allocator arena (the
    floor): unchanged. The baseline's own call-to-call range raises the floor where it is wider."""
    base = run_of(memory_bench([2 * MIB] * 12, [2 * MIB] * 12))
    current = run_of(memory_bench([2 * MIB] * 12, [3 * MIB] * 12))
    assert set(memory_outcomes(gate.compare(base, current)).values()) == {Outcome.UNCHANGED}
    assert gate.memory_floor([10 * MIB, 14 * MIB]) == 4 * MIB
    assert gate.memory_floor([5 * MIB] * 3) == MIB


def test_memory_is_compared_on_a_busy_machine_and_across_same_shape_machines() -> None:
    """Other processes' CPU does not change what a call allocates; another node of the same shape
    allocates the same; another Python version does not (its objects differ)."""
    rng = random.Random(3)
    base = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 64), load=1.5))
    current = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 128), load=1.5),
                     machine={**MACHINE, "node": "elsewhere"})
    outcomes = memory_outcomes(gate.compare(base, current))
    assert outcomes["t::m [x2] peak RSS growth (candidate)"] is Outcome.REGRESSED
    other_python = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 128)),
                          machine={**MACHINE, "python_version": "3.13.1"})
    assert set(memory_outcomes(gate.compare(base, other_python)).values()) == {Outcome.NOT_COMPARED}


def test_memory_is_judged_in_the_same_family_as_time() -> None:
    rng = random.Random(4)
    base = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 64)))
    current = run_of(memory_bench(growths(rng, 12, 8), growths(rng, 12, 128)))
    report = gate.compare(base, current)
    compared = [c for c in report.changes if c.compared]
    assert len(compared) == 3 and {c.family for c in compared} == {3}  # the time and both sides


# ---------------------------------------------------------------------------------------------
# The parallel stack's fingerprint

FP = {"cpu_model": "AMD EPYC 9654", "physical_cores": 2, "logical_cores": 2, "usable_cpus": 2,
      "usable_physical_cores": 2, "smt": False, "numa_nodes": 1, "governor": "performance",
      "blas": [{"internal_api": "openblas", "version": "0.3.27", "num_threads": 2}], "blas_threads": 2,
      "numba_threading_layer": "omp", "mpi_library": "MPICH 5.0.2", "mpi_transport": "library default",
      "gil_enabled": True, "python": "CPython 3.11", "cpu_mhz": 2400.0, "hostname": "box"}


def fp_run(samples: list[float], **changes: Any) -> Run:
    return run_of(bench_json("t::a", samples), machine={**MACHINE, "hpcdemo_fingerprint": {**FP, **changes}})


@pytest.mark.parametrize("field, value", [
    ("cpu_model", "Intel Xeon 8480"), ("physical_cores", 4), ("smt", True), ("numa_nodes", 2),
    ("blas_threads", 1), ("numba_threading_layer", "tbb"), ("mpi_library", "Open MPI v5.0.5"),
    ("mpi_transport", "UCX_TLS=tcp,self"), ("gil_enabled", False), ("python", "CPython 3.13"),
])
def test_a_stack_difference_that_changes_results_is_refused_unless_forced(field: str, value: Any) -> None:
    rng = random.Random(5)
    base, current = fp_run(timings(rng, 20)), fp_run(timings(rng, 20, centre=0.02), **{field: value})
    report = gate.compare(base, current)
    assert report.stack == [f"{field} {FP[field]!r} vs {value!r}"]
    assert not report.changes and not report.failed
    assert report.lines()[1].startswith("REFUSED: the runs differ in the parallel stack (")
    assert "--hpc-gate-force" in report.lines()[1]
    forced = gate.compare(base, current, force=True)
    assert forced.failed  # the time doubled, and it is compared now
    assert forced.lines()[1].startswith("FORCED: compared although the parallel stack differs")


def test_readings_and_unknown_fields_change_nothing_and_the_governor_is_noted() -> None:
    rng = random.Random(6)
    base = fp_run(timings(rng, 20))
    same = fp_run(timings(rng, 20), cpu_mhz=3100.0, hostname="other", numba_threading_layer=None)
    report = gate.compare(base, same)
    assert not report.stack and not report.noted and report.changes
    noted = gate.compare(base, fp_run(timings(rng, 20), governor="powersave"))
    assert noted.noted == ["governor 'performance' vs 'powersave'"] and noted.changes
    assert any(line.startswith("NOTE: governor") for line in noted.lines())


def test_earlier_runs_of_another_stack_give_no_drift() -> None:
    """A history run on another BLAS thread count wanders for that reason: it raises no bar."""
    rng = random.Random(11)
    history = [fp_run(timings(rng, 20, centre=c), blas_threads=1) for c in (0.01, 0.02, 0.03)]
    base, current = fp_run(timings(rng, 20)), fp_run(timings(rng, 20, centre=0.013))
    report = gate.compare(base, current, history=[*history, base])
    assert report.failed and all(c.drift == 0 for c in report.changes)


def test_compare_command_refuses_another_stack_unless_forced(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "store" / "m"
    rng = random.Random(12)
    save(folder, "0001_a.json", run_json(bench_json("t::a", timings(rng, 30)),
                                         machine={**MACHINE, "hpcdemo_fingerprint": FP}))
    other = {**MACHINE, "hpcdemo_fingerprint": {**FP, "blas_threads": 8}}
    save(folder, "0002_b.json", run_json(bench_json("t::a", timings(rng, 30, centre=0.02)), machine=other))
    args = ["compare", "--storage", f"file://{tmp_path / 'store'}", "--machine", "m"]
    assert main(args) == 0
    assert "REFUSED: the runs differ in the parallel stack (blas_threads 2 vs 8)" in capsys.readouterr().out
    assert main([*args, "--force"]) == 1
    assert "FORCED: compared although" in capsys.readouterr().out


def test_continuous_pairs_memory_as_it_pairs_time() -> None:
    """In interleaved session pairs (``continuous``) each side's memory is one more paired series:
    a candidate that allocates twice as much is flagged, an unchanged baseline side is not, and a
    one-arena shift is no regression."""
    from pytest_hpcdemo.gate.continuous import compare_sessions, session_figures

    rng = random.Random(13)

    def session(candidate_mib: float, baseline_mib: float = 4) -> dict[str, Any]:
        bench = memory_bench(growths(rng, 8, baseline_mib), growths(rng, 8, candidate_mib))
        return session_figures(run_json(bench))

    pairs = [(session(64), session(128, baseline_mib=4.75)) for _ in range(6)]  # +19%, under an arena
    outcomes = {c.key: c.outcome for c in compare_sessions(pairs) if c.kind == gate.MEMORY}
    assert outcomes == {"t::m [x2] peak RSS growth (baseline)": Outcome.UNCHANGED,
                        "t::m [x2] peak RSS growth (candidate)": Outcome.REGRESSED}
