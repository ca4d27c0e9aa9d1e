"""The gate and the report inside pytest runs (pytester): baseline, slowed workload, unchanged rerun,
per-test thresholds, no baseline, a corrupt history file, the report's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_hpcdemo.gate.history import machine_id

# Virtual time: every round "takes" its nominal seconds plus up to 2% of noise, on the benchmark's
# timer and in the claim's measurement alike. The gate's verdicts are then certain (a 40% slowdown
# is one; a rerun moves every median by less than the 5% minimum effect), whatever load other
# processes put on the machine; the real timings are the benchmarks' business.
BENCH = """
import random
import pytest
from pytest_hpcdemo.core import measure
from pytest_hpcdemo.core.measure import at_least

SLOW = {slow}
NOW = [0.0]
noise = random.Random()

def clock():
    return NOW[0]

def work(seconds):
    NOW[0] += seconds * (1 + 0.02 * noise.random())

def timed(fn):
    start = NOW[0]
    fn()
    return measure.Timing(NOW[0] - start, NOW[0] - start, None)

@pytest.mark.benchmark(timer=clock)
def test_kernel(benchmark):
    benchmark.pedantic(work, args=(0.005 * SLOW,), rounds=30, iterations=1)

@pytest.mark.benchmark(timer=clock)
@pytest.mark.gate(min_effect=0.6)
def test_tolerant(benchmark):
    benchmark.pedantic(work, args=(0.005 * SLOW,), rounds=30, iterations=1)

def test_half(speedup):
    speedup(lambda: work(0.01), lambda: work(0.005 * SLOW), [at_least("speedup", 1.2)], run=timed,
            name="half")
"""
# The virtual rounds last no real time: the foreign load during them means nothing.
RUN = ("-p", "no:xdist", "--hpc-gate", "--hpc-gate-busy=64")


def test_slowed_workload_fails_the_gate_and_unchanged_rerun_passes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The rewritten test file keeps its size within the same second: no stale bytecode.
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    pytester.makepyfile(test_work=BENCH.format(slow=1.0))
    first = pytester.runpytest_subprocess(*RUN, "--benchmark-autosave")
    assert first.ret == 0
    first.stdout.fnmatch_lines(["*hpcdemo gate*", "no saved baseline in --benchmark-storage*gate passes*"])
    (saved,) = (pytester.path / ".benchmarks" / machine_id()).glob("0001_*.json")
    bench = json.loads(saved.read_text())["benchmarks"][0]
    assert len(bench["stats"]["data"]) == 30  # raw timings kept for the gate

    pytester.makepyfile(test_work=BENCH.format(slow=1.4))
    slowed = pytester.runpytest_subprocess(*RUN)
    assert slowed.ret == pytest.ExitCode.TESTS_FAILED
    slowed.assert_outcomes(passed=3)
    slowed.stdout.fnmatch_lines([
        "baseline 0001_* vs this run; default min effect 5%, alpha 0.01, worse only",
        "REGRESSED     test_work.py::test_kernel: median time 5.* ms -> 7.* ms (+*%, p=*, 30 vs 30 rounds;*",
        "REGRESSED     test_work.py::test_half [[]half[]] speedup >=: median speedup *x -> *x (-*%, p=*",
        "gate: FAILED: *",
    ])
    assert "test_tolerant:" not in str(slowed.stdout)  # 40% is under its own 60%

    pytester.makepyfile(test_work=BENCH.format(slow=1.0))
    # A named baseline implies --hpc-gate.
    rerun = pytester.runpytest_subprocess("-p", "no:xdist", "--hpc-gate-busy=64",
                                          "--hpc-gate-baseline", "0001", "--hpc-report", "report")
    assert rerun.ret == 0, str(rerun.stdout)
    rerun.stdout.fnmatch_lines(["gate: passed: *unchanged*"])
    summary = (pytester.path / "report" / "summary.md").read_text()
    assert "## Gate: passed against 0001_" in summary and "| holds | test_work.py::test_half |" in summary
    assert "speedup" in (pytester.path / "report" / "summary.html").read_text()


def test_a_corrupt_baseline_ends_the_run_before_anything_is_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_work=BENCH.format(slow=1.0))
    folder = pytester.path / ".benchmarks" / machine_id()
    folder.mkdir(parents=True)
    bad = folder / "0001_bad.json"
    bad.write_text('{"benchmarks": [')
    result = pytester.runpytest_subprocess(*RUN, "--benchmark-autosave", "--hpc-gate-baseline=1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {bad.relative_to(pytester.path)}: corrupt history file: *"])
    assert [p.name for p in folder.iterdir()] == ["0001_bad.json"] and bad.read_text() == '{"benchmarks": ['


def test_a_corrupt_file_that_is_not_the_baseline_is_skipped_with_a_warning(pytester: pytest.Pytester) -> None:
    """A run that died while saving must not stop every later gate: the newest readable run is the
    baseline, the broken file is named, left as it is, and the next save takes the next number."""
    pytester.makepyfile(test_work=BENCH.format(slow=1.0))
    assert pytester.runpytest_subprocess(*RUN, "--benchmark-autosave").ret == 0
    folder = pytester.path / ".benchmarks" / machine_id()
    bad = folder / "0002_partial.json"
    bad.write_text("")
    result = pytester.runpytest_subprocess(*RUN, "--benchmark-autosave")
    assert result.ret == 0, str(result.stdout)
    result.stdout.fnmatch_lines(["*skipped *0002_partial.json: corrupt history file*",
                                 "baseline 0001_* vs this run*"])
    assert sorted(p.name[:4] for p in folder.iterdir()) == ["0001", "0002", "0003"] and bad.read_text() == ""


def test_most_series_not_compared_fails_under_strict(pytester: pytest.Pytester) -> None:
    """Everything "busy" (a negative busy threshold is refused, so the baseline is made busy)."""
    pytester.makepyfile(test_work=BENCH.format(slow=1.0))
    assert pytester.runpytest_subprocess(*RUN, "--benchmark-autosave").ret == 0
    (saved,) = (pytester.path / ".benchmarks" / machine_id()).glob("0001_*.json")
    data = json.loads(saved.read_text())
    for bench in data["benchmarks"]:
        bench["extra_info"].update(foreign_load=99.0, own_cpu=1.0)
        for figures in bench["extra_info"].get("claims", {}).values():
            figures.update(rounds=5, contested_rounds=5)
    saved.write_text(json.dumps(data))
    plain = pytester.runpytest_subprocess(*RUN)
    assert plain.ret == 0
    # The claim's memory (both sides) is compared whatever the load: what a call allocates does not
    # depend on other processes' CPU.
    plain.stdout.fnmatch_lines(["gate: passed: 4 not compared, 2 unchanged*",
                                "WARNING: MOST SERIES WERE NOT COMPARED (4 of 6)*"])
    strict = pytester.runpytest_subprocess(*RUN, "--hpc-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["--hpc-strict: most series were not compared: the gate fails"])


def test_bad_gate_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.gate(alpha=3)\ndef test_a(): pass\n")
    result = pytester.runpytest("--strict-markers")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: @pytest.mark.gate: alpha must be a probability above 0 and "
                                 "below 0.5, got 3"])


@pytest.mark.parametrize("marker, message", [
    ("both='yes'", "both must be True or False, got 'yes'"),
    ("busy_load='x'", "busy_load must be a number of cores >= 0, got 'x'"),
    ("min_effect=1.5", "min_effect must be a fraction in [[]0, 1)*"),
])
def test_gate_marker_values_are_checked_for_meaning(pytester: pytest.Pytester, marker: str, message: str
                                                   ) -> None:
    pytester.makepyfile(f"import pytest\n@pytest.mark.gate({marker})\ndef test_a(): pass\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: @pytest.mark.gate: {message}"])


def test_report_folder_that_is_a_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    Path(pytester.path / "taken").write_text("")
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest("--hpc-report", "taken")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --hpc-report taken: taken exists and is not a folder"])


@pytest.mark.parametrize("args", [("--benchmark-storage=taken", "--benchmark-autosave"),
                                  ("--benchmark-storage=taken/sub", "--hpc-gate")])
def test_storage_that_is_a_file_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester, args: tuple[str, ...]
) -> None:
    Path(pytester.path / "taken").write_text("")
    pytester.makepyfile("def test_a(): raise SystemExit('ran')\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --benchmark-storage taken*: taken exists and is not a folder"])


@pytest.mark.parametrize("args, message", [
    (("--hpc-gate", "--hpc-gate-baseline", "0009"),
     "ERROR: 0009: no such history file, and no saved run in *"),
    (("--hpc-gate-min-effect=lots",),
     "*--hpc-gate-min-effect: expected a fraction such as 0.05 or 5%, got 'lots'"),
    (("--hpc-gate-alpha=0.7",), "*--hpc-gate-alpha: must be a probability above 0 and below 0.5, got '0.7'"),
    (("--hpc-gate-min-effect=150%",),
     "*--hpc-gate-min-effect: must be a fraction in [[]0, 1) (under 100%), got '150%'"),
    (("--hpc-gate-baseline=",),
     "ERROR: an empty run name: give a run number (0003), a name prefix or a file"),
    (("--benchmark-storage=elasticsearch+http://h/i", "--hpc-gate"),
     "ERROR: *the gate reads file storage only*"),
])
def test_bad_gate_options_are_usage_errors(
    pytester: pytest.Pytester, args: tuple[str, ...], message: str
) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_saves_go_through_the_exclusive_atomic_writer(pytester: pytest.Pytester) -> None:
    """pytest-benchmark's file storage save is replaced by gate.save_exclusive (whose races are
    tested in test_gate.py): a save leaves the numbered file and no temporary one."""
    pytester.makepyfile(test_work="""
def test_storage_save_is_ours(request):
    save = request.config._benchmarksession.storage.save
    assert save.__module__ == "pytest_hpcdemo.gate.plugin", save

def test_bench(benchmark):
    benchmark.pedantic(sum, args=([1, 2],), rounds=3)
""")
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--benchmark-autosave")
    assert result.ret == 0, str(result.stdout)
    folder = pytester.path / ".benchmarks" / machine_id()
    assert [p.name[:5] for p in folder.iterdir()] == ["0001_"]
