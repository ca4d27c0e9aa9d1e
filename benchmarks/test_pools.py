"""Chapter "Thread Pool": ``concurrent.futures`` semantics, one conformance suite for every backend.

The executor tests take the ``executor`` fixture, parametrised by backend (threads and processes
here; MPI and Ray join when installed), and adapt to what each backend declares it cannot offer.
Task ends are released by the test through files (``workloads.wait_for_file``), never by sleeps, so
orders are exact whatever the load. Every wait is bounded, and a test that fails still releases
every task it held (the ``gates`` fixture's teardown), so that a broken executor fails the test
whose name says which semantics broke instead of hanging the run.

Where the guide is wrong: "submit function will return immediately with blocking" (it returns
without blocking; its own list says so), and "the thread pool size is set to 0.2 ... changed to
0.1": 0.2 and 0.1 are the tasks' durations, not pool sizes. Task 2 can be cancelled only while it
is still queued, which with ``max_workers=2`` it never is; with ``max_workers=1`` it is.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from pathlib import Path

import pytest

from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.core.measure import at_least

# How long a step that must happen promptly may take: a submitted task starting (a process pool
# or Ray starts a worker process then: Ray's five took over 15 s on a 2-core machine at load 20)
# or a released task ending (a file poll of 2 ms). A broken executor fails a test after this,
# never hangs it.
STEP_TIMEOUT = 30.0
# The longest a gated task waits for its file before it ends by itself: the teardown releases every
# gate first, so this only bounds a task whose test process vanished.
RELEASE_TIMEOUT = 60.0


class Gates:
    """Files that release ``wait_for_file`` tasks, one per task, in an order the test chooses."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys: list[object] = []

    def path(self, key: object) -> str:
        return str(self.directory / f"release-{key}")

    def release(self, key: object) -> None:
        workloads.touch(self.path(key))

    def release_all(self) -> None:
        for key in self.keys:
            self.release(key)

    def submit(self, pool, key: object):
        self.keys.append(key)
        return pool.submit(workloads.wait_for_file, self.path(key), key, RELEASE_TIMEOUT,
                           self.marker("done", key), self.marker("started", key))

    def map(self, pool, keys: list[object]):
        """``pool.map`` over gated tasks; each creates ``done_path(key)`` as it ends."""
        self.keys.extend(keys)
        paths, done_paths = [self.path(k) for k in keys], [self.marker("done", k) for k in keys]
        return pool.map(workloads.wait_for_file, paths, keys, [RELEASE_TIMEOUT] * len(keys), done_paths,
                        timeout=STEP_TIMEOUT)

    def marker(self, event: str, key: object) -> str:
        """The file a gated task creates as it starts (``started``) or ends (``done``)."""
        return str(self.directory / f"{event}-{key}")

    def wait_done(self, key: object) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT
        while not os.path.exists(self.marker("done", key)):
            assert time.monotonic() < deadline, f"task {key} did not end {STEP_TIMEOUT:g} s after its release"
            time.sleep(0.002)


@pytest.fixture
def gates(tmp_path: Path, executor) -> Iterator[Gates]:
    """Gates for the test's tasks; all are released when the test ends, before its pools shut
    down (this fixture depends on ``executor``, so it is torn down first)."""
    gates = Gates(tmp_path)
    yield gates
    gates.release_all()


# Backends whose pools ran fewer tasks at once than max_workers in this session, and what was seen.
SERIALISED: dict[str, str] = {}


def require_tasks_at_once(backend) -> None:
    """Fail at once where test_pool_runs_max_workers_tasks_at_once found the backend's tasks
    serialised: a test that needs tasks running at once would only wait for its step to time out."""
    if backend.name in SERIALISED:
        pytest.fail(f"needs tasks running at once, which the {backend.name} pool did not: "
                    f"{SERIALISED[backend.name]} (test_pool_runs_max_workers_tasks_at_once)", pytrace=False)


def wait_running(future, timeout: float | None = None) -> None:
    timeout = STEP_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    while not future.running() and not future.done():
        assert time.monotonic() < deadline, f"the task never started within {timeout:g} s"
        time.sleep(0.002)


def test_submit_returns_before_the_task_ends(executor, gates, claim) -> None:
    """"submit is not blocked, and returns immediately": the future comes back while the task is
    still held, ``done()`` is False until the task ends and True after."""
    pool = executor(1)
    future = gates.submit(pool, "a")
    assert not future.done()
    gates.release("a")
    assert future.result(timeout=STEP_TIMEOUT) == "a"
    assert future.done()
    claim("submit returned while its task was held; done() False then True")


def test_result_blocks_and_honours_timeout(executor, gates) -> None:
    """"result method is blocked": it waits for the task, and with a timeout raises TimeoutError
    when the task is not done by then."""
    pool = executor(1)
    future = gates.submit(pool, "a")
    with pytest.raises(TimeoutError):
        future.result(timeout=0.05)
    gates.release("a")
    assert future.result(timeout=STEP_TIMEOUT) == "a"


def test_cancel_queued_but_not_running(executor, executor_backend, gates, claim) -> None:
    """"If the task is already running in the thread pool, it cannot be canceled": cancel() is
    False for a running task and True for one still waiting in the queue (pool of one worker).
    A backend that hands tasks to a worker ahead of time (process pools queue one extra call)
    declares how many, and those are not cancellable either."""
    pool = executor(1)
    running = gates.submit(pool, "running")
    wait_running(running)
    prefetched = [gates.submit(pool, f"ahead{i}") for i in range(executor_backend.prefetched(1))]
    queued = gates.submit(pool, "queued")
    time.sleep(0.05)  # let a backend hand work ahead if it would; the claim must hold regardless
    assert running.cancel() is executor_backend.cancels_running
    assert queued.cancel() is True
    assert queued.cancelled()
    for key in ["running", *(f"ahead{i}" for i in range(len(prefetched)))]:
        gates.release(key)
    assert running.result(timeout=STEP_TIMEOUT) == "running"
    claim(f"cancel: running {running.cancelled()}, queued {queued.cancelled()} "
          f"({len(prefetched)} may be handed ahead)")


def test_pool_runs_max_workers_tasks_at_once(executor, executor_backend, gates, claim) -> None:
    """A pool of ``max_workers`` runs that many tasks at the same time: every one of them has
    started (its own marker file, not ``Future.running()``, which a process pool sets as it queues
    a call) while all are still held: what lets ``as_completed`` and ``wait`` see any order.
    Where it does not, the later tests that need tasks at once fail at once, citing this one."""
    max_workers = 3
    pool = executor(max_workers)
    futures = [gates.submit(pool, k) for k in range(max_workers)]
    deadline = time.monotonic() + STEP_TIMEOUT

    def started() -> int:
        return sum(os.path.exists(gates.marker("started", k)) for k in range(max_workers))

    while started() < max_workers:
        if time.monotonic() > deadline:
            seen = (f"only {started()} of {max_workers} held tasks ran at once "
                    f"after {STEP_TIMEOUT:g} s on a pool of max_workers={max_workers}")
            SERIALISED[executor_backend.name] = seen
            pytest.fail(seen, pytrace=False)
        time.sleep(0.002)
    gates.release_all()
    assert [f.result(timeout=STEP_TIMEOUT) for f in futures] == list(range(max_workers))
    claim(f"{max_workers} held tasks running at once on max_workers={max_workers}")


def test_as_completed_yields_in_completion_order(executor, executor_backend, gates, claim) -> None:
    """"as_completed ... when a certain task is completed, it can continue": futures come back in
    the order the tasks finish, not the order they were submitted. Tasks are released one at a
    time in the order 2, 0, 1; once the released one has finished, ``as_completed`` over the tasks
    left must yield it at once (``timeout=0``: a finished future is yielded before any wait), where
    an iterator in submission order would wait on an unfinished one."""
    require_tasks_at_once(executor_backend)
    keys = [0, 1, 2]
    pool = executor(len(keys))
    futures = {k: gates.submit(pool, k) for k in keys}
    release_order = [2, 0, 1]
    seen = []
    for key in release_order:
        gates.release(key)
        done, _ = wait([futures[key]], timeout=STEP_TIMEOUT)
        assert done, f"task {key} did not end within {STEP_TIMEOUT:g} s of its release"
        left = [futures[k] for k in keys if k not in seen]
        try:
            first = next(as_completed(left, timeout=0))
        except TimeoutError:
            pytest.fail(f"as_completed did not yield finished task {key} first: it waited on an "
                        f"unfinished one (tasks left {[k for k in keys if k not in seen]})", pytrace=False)
        assert first.done(), f"as_completed yielded an unfinished task before finished task {key}"
        seen.append(first.result(timeout=0))
    assert seen == release_order
    claim(f"submitted {keys}, released {release_order}, as_completed gave {seen}")


def test_map_yields_in_input_order(executor, executor_backend, gates, claim) -> None:
    """"the map method can guarantee the order of tasks": results come in input order even when
    later inputs finish first (the guide shows it with durations 0.3, 0.2, 0.1, 0.4, 0.5; here the
    tasks are released last input first, each ending before the next is released)."""
    require_tasks_at_once(executor_backend)
    keys = [0, 1, 2, 3, 4]
    pool = executor(len(keys))
    results = gates.map(pool, keys)
    finish_order = keys[::-1]
    for key in finish_order:
        gates.release(key)
        gates.wait_done(key)
    got = list(results)
    assert got == keys, f"map yielded {got} for tasks that finished in the order {finish_order}"
    claim(f"tasks finished in the order {finish_order}; map yielded {got}")


def test_map_reraises_a_worker_exception_in_place(executor) -> None:
    """A task's exception reaches the caller: ``map`` yields the results before it, then raises it
    when iteration reaches the failed input."""
    pool = executor(2)
    results = pool.map(workloads.maybe_raise, range(5), [3] * 5)
    got = []
    with pytest.raises(ValueError, match="task 3 failed"):
        for value in results:
            got.append(value)
    assert got == [0, 1, 2]


def test_exception_reaches_the_caller(executor) -> None:
    """An exception raised in a task is re-raised by ``result()`` and returned by ``exception()``."""
    pool = executor(1)
    future = pool.submit(workloads.raise_value_error, "boom")
    with pytest.raises(ValueError, match="boom"):
        future.result(timeout=STEP_TIMEOUT)
    assert isinstance(future.exception(), ValueError)


def test_wait_first_completed_all_completed_and_timeout(executor, executor_backend, gates, claim) -> None:
    """``wait``: with a timeout it returns (never raises) what is done; FIRST_COMPLETED returns as
    soon as one task ends; ALL_COMPLETED (the default) when all have."""
    require_tasks_at_once(executor_backend)
    pool = executor(3)
    futures = [gates.submit(pool, k) for k in range(3)]
    done, not_done = wait(futures, timeout=0.05)
    assert not done and len(not_done) == 3
    gates.release(1)
    done, not_done = wait(futures, timeout=STEP_TIMEOUT, return_when=FIRST_COMPLETED)
    assert [f.result() for f in done] == [1] and len(not_done) == 2
    gates.release(0)
    gates.release(2)
    done, not_done = wait(futures, timeout=STEP_TIMEOUT, return_when=ALL_COMPLETED)
    assert len(done) == 3 and not not_done
    claim("wait: timeout -> 0 done, FIRST_COMPLETED -> 1, ALL_COMPLETED -> 3")


def test_pool_reuses_at_most_max_workers(executor, claim) -> None:
    """"The number of available threads is tuned": a pool runs every task on at most
    ``max_workers`` workers, reusing them."""
    max_workers = 2
    pool = executor(max_workers)
    ids = set(pool.map(workloads.worker_identity, [0.01] * 12))
    assert 1 <= len(ids) <= max_workers
    claim(f"12 tasks ran on {len(ids)} workers (max_workers={max_workers})")


def test_tasks_share_the_callers_memory_only_on_threads(executor, executor_backend, claim) -> None:
    """Thread pools run tasks in the caller's process, on its objects; every other backend runs
    them in other processes, on pickled copies: a task that appends to a list changes the
    caller's list on threads only, and reports another pid elsewhere."""
    pool = executor(1)
    box: list[int] = []
    pid = pool.submit(workloads.append_pid, box).result(timeout=STEP_TIMEOUT)
    if executor_backend.shares_memory:
        assert box == [pid] and pid == os.getpid(), "a thread pool's task did not run on the caller's list"
    else:
        name = executor_backend.name
        assert box == [], f"the {name} pool's task changed the caller's list: it shares memory"
        assert pid != os.getpid(), f"the {name} pool ran its task in the caller's process"
    claim(f"task pid {pid} (caller {os.getpid()}), caller's list after the task: {box}")


def test_shutdown_cancel_futures_cancels_only_queued(executor, executor_backend, gates) -> None:
    """``shutdown(cancel_futures=True)`` cancels what is still queued; running work completes."""
    pool = executor(1)
    running = gates.submit(pool, "running")
    wait_running(running)
    ahead = executor_backend.prefetched(1)
    queued = [gates.submit(pool, f"q{i}") for i in range(ahead + 3)]
    pool.shutdown(wait=False, cancel_futures=True)
    gates.release("running")
    for i in range(len(queued)):
        gates.release(f"q{i}")  # tasks handed ahead to a worker must be able to finish
    # A second shutdown() would not wait (a process pool forgets its manager thread on the first),
    # nor would wait(): a future cancelled by shutdown stays CANCELLED, which wait() never counts
    # as done. Poll done() instead.
    deadline = time.monotonic() + STEP_TIMEOUT
    while not all(f.done() for f in [running, *queued]):
        assert time.monotonic() < deadline, "queued work neither ran nor was cancelled"
        time.sleep(0.01)
    assert running.result() == "running"
    assert sum(f.cancelled() for f in queued) >= len(queued) - ahead


def test_pool_amortises_thread_creation(speedup) -> None:
    """"thread creation and destruction overhead is restricted to the initial creation of the
    pool": many short tasks on a pool beat one new thread per task. "Beat" is the bound: the
    pooled tasks take less time (speedup above 1); the ratio is measured and shown."""
    tasks = 2000

    def thread_per_task() -> None:
        for i in range(tasks):
            t = threading.Thread(target=workloads.identity, args=(i,))
            t.start()
            t.join()

    with ThreadPoolExecutor(1) as pool:
        def pooled() -> None:
            for i in range(tasks):
                pool.submit(workloads.identity, i).result()

        speedup(thread_per_task, pooled, [at_least("speedup", 1.0)], cores_needed=1,
                name=f"{tasks} tasks: pool vs a thread per task")
