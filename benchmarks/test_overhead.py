"""The plugin costs nothing when unused (ours, not the guide's): a session that uses none of its
fixtures, markers or options collects and runs within 2% of the CPU time it takes with
``-p no:hpcdemo`` (issue 13's bound). Heavy backends are imported only by the tests that need them,
and after collection an unused plugin unregisters its hooks, so that no test pays for them.

Why the bound holds for larger suites too: an unused plugin costs a fixed start-up (its modules,
options and hook registrations) plus one pass over the collected items; no hook of ours runs per
test afterwards. Its share of a session therefore falls as the session grows, and 3,000 trivial
tests, whose per-test work is the least a suite can have, are the hard case of the issue's two.
``-p no:hpcdemo`` stands for "not installed": pytest then imports nothing of ours
(``tests/test_guest.py::test_blocked_plugin_is_as_not_installed``).

CPU time of the pytest process (``cpu_speedup``), not wall time: on a shared machine wall time
mostly measures the neighbours, while the CPU time of a serial process changes little with load.
Rounds that foreign load contests are still dropped, so that a busy machine gives "inconclusive",
never a false verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pytest_hpcdemo.core.measure import at_most

BOUND = 1.02  # issue 13: at most 2% of the time of running the suite (or of collecting numpy's)
# Issue 17: at most 5% of a plain ``pytest --collect-only``. A suite of 3,000 one-line tests is the
# worst case of collection: callgrind counted 3.8% more instructions with the plugin (its start-up,
# about 115 M instructions, over a collection that does nearly nothing else), against 0.8% of
# running the same tests; numpy's 50,634 tests, issue 13's collection case, are in the README.
COLLECT_BOUND = 1.05
MODULES, TESTS_PER_MODULE = 30, 100  # the 3,000 trivial tests


def write_plain_suite(root: Path, modules: int = MODULES, tests_per_module: int = TESTS_PER_MODULE) -> None:
    for m in range(modules):
        body = "".join(f"def test_{t}():\n    assert {t} == {t}\n\n" for t in range(tests_per_module))
        (root / f"test_plain_{m}.py").write_text(body)


def pytest_in(root: Path, *args: str) -> None:
    # Bytecode caching on, as for a user: otherwise every run recompiles the plugin's sources.
    # xdist stays out of both runs, so that only this plugin differs.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *args],
                   cwd=root, env=env, check=True, capture_output=True, timeout=300)


def test_collect_only_costs_within_five_percent(speedup, tmp_path: Path) -> None:
    """``pytest --collect-only`` of 3,000 plain tests takes at most 5% more CPU time with the plugin
    than with ``-p no:hpcdemo``: its start-up and its one pass over the items, nothing else."""
    write_plain_suite(tmp_path)
    speedup(lambda: pytest_in(tmp_path, "--collect-only"),
            lambda: pytest_in(tmp_path, "--collect-only", "-p", "no:hpcdemo"),
            [at_most("cpu_speedup", COLLECT_BOUND)], cores_needed=1, budget_factor=3.0,
            name="collect-only, 3,000 tests: CPU with plugin / without")


def test_running_trivial_tests_costs_within_two_percent(speedup, tmp_path: Path) -> None:
    """Running 3,000 trivial tests takes at most 2% more CPU time with the plugin than with
    ``-p no:hpcdemo`` (before: 9%, about 50-64 us per test from six marker lookups in
    ``pytest_runtest_setup`` and the chapters' per-test hooks; an unused plugin now has none)."""
    write_plain_suite(tmp_path)
    speedup(lambda: pytest_in(tmp_path), lambda: pytest_in(tmp_path, "-p", "no:hpcdemo"),
            [at_most("cpu_speedup", BOUND)], cores_needed=1, budget_factor=6.0,
            name="3,000 trivial tests: CPU with plugin / without")
