"""Pool teardown is bounded and leaks never hold the session (issue #12): a task that never ends
fails its test naming the task, a process pool's workers are killed, and a session whose test left
a thread pool running still ends, with a warning naming the test. Each case runs in a subprocess,
since a leaked thread outlives the run that started it."""

from __future__ import annotations

import os
import time

import pytest

from pytest_hpcdemo.backends.processes import exit_description

GRACE = ("--hpc-pool-grace", "1")
# pool_guard's exit grace (3 s) and the pool grace, with room for a loaded machine's start-up.
SESSION_LIMIT_S = 90.0

HANDED_TO_THE_FIXTURE = """
import time

def test_never_ending_task(executor):
    executor(1).submit(time.sleep, 3600)
"""

LEAKED = """
import threading
from concurrent.futures import ThreadPoolExecutor

def test_leaks_a_pool():
    ThreadPoolExecutor(1).submit(threading.Event().wait)

def test_after_the_leak():
    pass
"""


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, float]:
    started = time.monotonic()
    # Opted in (as this repository's ini is): a session that uses nothing of ours is left alone.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "hpcdemo=true", *args,
                                           timeout=SESSION_LIMIT_S)
    return result, time.monotonic() - started


def test_a_process_pool_task_that_never_ends_is_killed_and_named(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(HANDED_TO_THE_FIXTURE)
    result, seconds = run(pytester, f"{path.name}::test_never_ending_task[process]", *GRACE)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*NamingProcessPool still had tasks running 1 s after the test: "
                                 "sleep(3600); killed worker pids *"])
    assert "left 1 thread(s) running" not in result.stdout.str()
    assert seconds < SESSION_LIMIT_S


def test_a_thread_pool_task_that_never_ends_fails_the_test_and_the_session_ends(
        pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(HANDED_TO_THE_FIXTURE)
    result, _ = run(pytester, f"{path.name}::test_never_ending_task[thread]", *GRACE)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*ThreadPoolExecutor still had tasks running 1 s after the test: sleep(3600); threads hpcdemo_0 "
        "cannot be killed and are left running*",
        "*test_never_ending_task?thread? left 1 thread(s) running after its teardown: hpcdemo_0 "
        "(a ThreadPoolExecutor worker)*",
    ])
    result.stderr.fnmatch_lines(["hpcdemo: 1 thread(s) leaked by *test_never_ending_task?thread? still run "
                                 "3 s after the session; exiting with status 1 without waiting for them"])
    assert result.ret == 1


def test_a_leaked_thread_pool_is_named_and_the_session_still_ends(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(LEAKED)
    result, _ = run(pytester)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_leaks_a_pool left 1 thread(s) running after its teardown: "
                                 "ThreadPoolExecutor-0_0 (a ThreadPoolExecutor worker)*"])
    assert "test_after_the_leak left" not in result.stdout.str()
    result.stderr.fnmatch_lines(["hpcdemo: 1 thread(s) leaked by *test_leaks_a_pool still run*"])
    assert result.ret == 0


def test_a_session_without_leaks_exits_normally(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass\n")
    result, _ = run(pytester)
    result.assert_outcomes(passed=1)
    assert "hpcdemo: " not in result.stderr.str()


@pytest.mark.parametrize("exitcode, text", [(0, "exit code 0"), (3, "exit code 3"),
                                            (-9, "signal 9 (SIGKILL)"), (-11, "signal 11 (SIGSEGV)"),
                                            (-200, "signal 200")])
def test_exit_description(exitcode: int, text: str) -> None:
    assert exit_description(exitcode) == text


def test_own_pid_is_never_killed_by_die() -> None:
    from pytest_hpcdemo.core import workloads

    with pytest.raises(RuntimeError, match="caller's process"):
        workloads.die("kill", None, os.getpid())


IDLE_LEAK = """
from concurrent.futures import ThreadPoolExecutor

KEPT = []

def test_leaks_an_idle_pool():
    KEPT.append(ThreadPoolExecutor(1))
    assert KEPT[0].submit(int, 7).result(timeout=10) == 7
"""


def test_a_leaked_idle_pool_is_named_and_ends_with_the_session(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(IDLE_LEAK)
    result, _ = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_leaks_an_idle_pool left 1 thread(s) running after its teardown*"])
    assert "still run" not in result.stderr.str(), "an idle leaked pool's worker did not end at exit"
    assert result.ret == 0
