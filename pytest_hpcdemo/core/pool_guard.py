"""Leaked pools and threads: named after the test that left them, and never allowed to hold the
session's end.

A test that leaves a pool (or any non-daemon thread) running gets a warning naming it. At exit,
CPython joins every non-daemon thread and ``concurrent.futures`` joins every pool's workers, so one
task that never ends keeps the finished session from exiting. When such a leak was seen, this
module kills leaked process pools' workers at exit, gives leaked threads a grace, and if they still
run, ends the process with pytest's exit status: the terminal summary and the report files were
written by then.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Generator

import pytest

from .options import positive_seconds

THREADS_BEFORE = pytest.StashKey[frozenset[threading.Thread]]()
# How long a thread the test started gets to end after its teardown before it counts as leaked
# (a pool shut down with wait=False finishes its last task in that time).
SETTLE_S = 1.0
# At exit, how long leaked threads get to end before the process ends without them.
EXIT_GRACE_S = 3.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("hpcdemo").addoption(
        "--hpc-pool-grace", type=positive_seconds, default=10.0, metavar="SECONDS",
        help="how long a pool's running tasks get to end at teardown before its workers are killed "
             "and the test fails naming them (default: 10)")


def _running_threads() -> frozenset[threading.Thread]:
    return frozenset(t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread())


def describe_thread(thread: threading.Thread) -> str:
    """The thread's name, and the kind of pool it serves when it is a pool's."""
    pools = sys.modules.get("concurrent.futures.thread"), sys.modules.get("concurrent.futures.process")
    if pools[0] is not None and thread in pools[0]._threads_queues:
        return f"{thread.name} (a ThreadPoolExecutor worker)"
    if pools[1] is not None and thread in pools[1]._threads_wakeups:
        return f"{thread.name} (a ProcessPoolExecutor's manager)"
    return thread.name


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    item.stash[THREADS_BEFORE] = _running_threads()
    return (yield)


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    finally:
        before = item.stash.get(THREADS_BEFORE, frozenset())
        started = [t for t in _running_threads() if t not in before]
        for thread in started:
            thread.join(SETTLE_S / len(started))
        leaked = [t for t in started if t.is_alive()]
        if leaked:
            EXIT.leaks.extend((item.nodeid, t) for t in leaked)
            warnings.warn(pytest.PytestWarning(
                f"{item.nodeid} left {len(leaked)} thread(s) running after its teardown: "
                f"{', '.join(map(describe_thread, leaked))}; shut its pools down (or use the "
                f"executor fixture)"), stacklevel=1)


def wake_idle_thread_pool_workers() -> None:
    """What ``concurrent.futures`` does at exit, done first: idle workers of every thread pool end
    (a worker running a task ends after it)."""
    thread_pools = sys.modules.get("concurrent.futures.thread")
    if thread_pools is None:
        return
    thread_pools._shutdown = True  # type: ignore[attr-defined]
    for work_queue in list(thread_pools._threads_queues.values()):
        work_queue.put(None)


def kill_leaked_process_workers() -> None:
    """SIGKILL the workers of every process pool whose manager thread is still alive."""
    process_pools = sys.modules.get("concurrent.futures.process")
    if process_pools is None:
        return
    for manager in list(process_pools._threads_wakeups):
        if manager.is_alive():
            for worker in list((getattr(manager, "processes", None) or {}).values()):
                worker.kill()


class ExitGuard:
    """The leaks of every session in this process, and the session that finished last, whose exit
    status the process ends with: a session run inside another (pytester's in-process runs)
    finishes first, so the outer one's status is never replaced by an inner one's."""

    def __init__(self) -> None:
        self.leaks: list[tuple[str, threading.Thread]] = []
        self.last_session: pytest.Session | None = None
        self.registered = False

    def session_finished(self, session: pytest.Session) -> None:
        self.last_session = session
        if self.leaks and not self.registered:
            # Registered after concurrent.futures' own exit hooks, so it runs before they join
            # the pools' threads.
            threading._register_atexit(self.end_despite_leaks)  # type: ignore[attr-defined]
            self.registered = True

    def end_despite_leaks(self) -> None:
        wake_idle_thread_pool_workers()
        kill_leaked_process_workers()
        alive = [(nodeid, t) for nodeid, t in self.leaks if t.is_alive()]
        for _, thread in alive:
            thread.join(EXIT_GRACE_S / len(alive))
        alive = [(nodeid, t) for nodeid, t in alive if t.is_alive()]
        if not alive or self.last_session is None:
            return
        status = int(self.last_session.exitstatus)
        tests = sorted({nodeid for nodeid, _ in alive})
        sys.stdout.flush()
        sys.stderr.write(f"hpcdemo: {len(alive)} thread(s) leaked by {', '.join(tests)} still run "
                         f"{EXIT_GRACE_S:g} s after the session; exiting with status {status} "
                         f"without waiting for them\n")
        sys.stderr.flush()
        os._exit(status)


EXIT = ExitGuard()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    EXIT.session_finished(session)
