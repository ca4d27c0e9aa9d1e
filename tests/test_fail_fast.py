"""A regression of ``concurrent.futures`` fails the chapter test that names the broken semantics,
and the run ends instead of hanging (issue #10, item 5).

Each regression is planted by ``tests/concurrent_futures_regressions.py`` (a ``-p`` plugin) in a
pytest run of the chapter modules in a subprocess; the runs are started together. Each runs the
semantic tests that concern the regression on the thread and process backends, with the chapters'
own bounded waits (``test_pools.STEP_TIMEOUT``, 30 s) and the default pool-teardown grace
(``--hpc-pool-grace``, 10 s), as a user's run has them, and must end within ``RUN_LIMIT_S``.

The limit is the issue's 3 minutes, well above each run's idle figure: the slowest, a pool of one
worker, waits out two steps (the thread and process pools never run 3 tasks at once), about 70 s
in all; measured here at load 24 on 2 cores with all five runs at once, 98 s. A regression that made
a test wait out more steps than that, a wait without a bound, or a teardown that waits on tasks
held by the failed test would exceed it. What the rest of a chapter run costs is its timing
claims, each bounded by ``--hpc-budget`` times the extension whatever the regression (README).
Under load an unrelated test may fail too, so only the expected failures are asserted, not the
absence of others.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "benchmarks"
RUN_LIMIT_S = 180.0

# regression -> (modules, -k selection, tests that must fail)
REGRESSIONS: dict[str, tuple[tuple[str, ...], str, set[str]]] = {
    "cancel": (("test_pools.py",), "cancel", {
        "test_cancel_queued_but_not_running[thread]", "test_cancel_queued_but_not_running[process]"}),
    "map-order": (("test_pools.py",), "map_yields", {
        "test_map_yields_in_input_order[thread]", "test_map_yields_in_input_order[process]"}),
    "as-completed-order": (("test_pools.py",), "as_completed", {
        "test_as_completed_yields_in_completion_order[thread]",
        "test_as_completed_yields_in_completion_order[process]"}),
    "process-threads": (("test_pools.py", "test_multiprocessing.py"), "share or dead_worker", {
        "test_tasks_share_the_callers_memory_only_on_threads[process]",
        "test_dead_worker_breaks_the_pool_clearly[exit]"}),
    "one-worker": (("test_pools.py",), "at_once or as_completed", {
        "test_pool_runs_max_workers_tasks_at_once[thread]",
        "test_pool_runs_max_workers_tasks_at_once[process]"}),
}


def start(regression: str, basetemp: Path) -> subprocess.Popen[str]:
    modules, selection, _ = REGRESSIONS[regression]
    env = {**os.environ, "HPCDEMO_REGRESSION": regression,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "concurrent_futures_regressions", "-p", "no:cacheprovider",
         *(str(CHAPTERS / m) for m in modules), "-m", "not timing",
         "-k", f"({selection}) and not mpi and not ray",
         "-q", "-rfE", f"--basetemp={basetemp}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[float, int | None, str]]]:
    """Every regression's run, started together: (seconds to end, exit status, output)."""
    started = time.monotonic()
    procs = {r: start(r, tmp_path_factory.mktemp(r)) for r in REGRESSIONS}
    results: dict[str, tuple[float, int | None, str]] = {}
    try:
        for regression, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(1.0, RUN_LIMIT_S - (time.monotonic() - started)))
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            results[regression] = (time.monotonic() - started, proc.returncode, out)
        yield results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("regression", list(REGRESSIONS))
def test_a_planted_regression_fails_the_test_that_names_it(runs, regression: str) -> None:
    seconds, status, out = runs[regression]
    assert seconds < RUN_LIMIT_S, \
        f"the run under {regression!r} did not end within {RUN_LIMIT_S:g} s:\n{out[-3000:]}"
    assert status == 1, f"the run under {regression!r} exited {status}, not 1 (tests failed):\n{out[-3000:]}"
    failed = set(re.findall(r"^(?:FAILED|ERROR) \S+::(\S+)", out, re.MULTILINE))
    expected = REGRESSIONS[regression][2]
    assert expected <= failed, f"under {regression!r} expected {sorted(expected)} to fail; failed: " \
                               f"{sorted(failed)}\n{out[-3000:]}"
