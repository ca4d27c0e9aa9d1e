"""Chapter "Thread Pool": ``concurrent.futures`` semantics, one conformance suite for every backend.

The executor tests take the ``executor`` fixture, parametrised by backend (threads and processes
here; MPI and Ray join when installed), and adapt to what each backend declares it cannot offer.
Task ends are released by the test through files (``workloads.wait_for_file``), never by sleeps, so
orders are exact whatever the load.

Where the guide is wrong: "submit function will return immediately with blocking" (it returns
without blocking; its own list says so), and "the thread pool size is set to 0.2 ... changed to
0.1": 0.2 and 0.1 are the tasks' durations, not pool sizes. Task 2 can be cancelled only while it
is still queued, which with ``max_workers=2`` it never is; with ``max_workers=1`` it is.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    ThreadPoolExecutor,
    as_completed,
    wait,
)
from pathlib import Path

import pytest

from pytest_hpcdemo import workloads
from pytest_hpcdemo.measure import at_least

RELEASE_TIMEOUT = 60.0


class Gates:
    """Files that release ``wait_for_file`` tasks, one per task, in an order the test chooses."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, key: object) -> str:
        return str(self.directory / f"release-{key}")

    def release(self, key: object) -> None:
        workloads.touch(self.path(key))

    def submit(self, pool, key: object):
        return pool.submit(workloads.wait_for_file, self.path(key), key, RELEASE_TIMEOUT)


@pytest.fixture
def gates(tmp_path: Path) -> Gates:
    return Gates(tmp_path)


def wait_running(future, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not future.running() and not future.done():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.002)


def test_submit_returns_before_the_task_ends(executor, gates, claim) -> None:
    """"submit is not blocked, and returns immediately": the future comes back while the task is
    still held, ``done()`` is False until the task ends and True after."""
    pool = executor(1)
    future = gates.submit(pool, "a")
    assert not future.done()
    gates.release("a")
    assert future.result(timeout=RELEASE_TIMEOUT) == "a"
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
    assert future.result(timeout=RELEASE_TIMEOUT) == "a"


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
    assert running.result(timeout=RELEASE_TIMEOUT) == "running"
    claim(f"cancel: running {running.cancelled()}, queued {queued.cancelled()} "
          f"({len(prefetched)} may be handed ahead)")


def test_as_completed_yields_in_completion_order(executor, gates, claim) -> None:
    """"as_completed ... when a certain task is completed, it can continue": futures come back in
    the order the tasks finish, not the order they were submitted."""
    keys = [0, 1, 2]
    pool = executor(len(keys))
    futures = [gates.submit(pool, k) for k in keys]
    release_order = [2, 0, 1]
    gates.release(release_order[0])
    seen = []
    for future in as_completed(futures, timeout=RELEASE_TIMEOUT):
        seen.append(future.result())
        if len(seen) < len(keys):
            gates.release(release_order[len(seen)])
    assert seen == release_order
    claim(f"submitted {keys}, released {release_order}, as_completed gave {seen}")


def test_map_yields_in_input_order(executor, claim) -> None:
    """"the map method can guarantee the order of tasks": results come in input order even when
    later inputs finish first (the guide's durations 0.3, 0.2, 0.1, 0.4, 0.5, scaled down)."""
    durations = [0.15, 0.10, 0.05, 0.20, 0.25]
    pool = executor(len(durations))
    started = time.perf_counter()
    finished = []
    for value in pool.map(workloads.io_wait, durations):
        finished.append((value, time.perf_counter() - started))
    assert [v for v, _ in finished] == durations
    claim("map order " + ", ".join(f"{v}s@{t:.2f}" for v, t in finished))


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
        future.result(timeout=RELEASE_TIMEOUT)
    assert isinstance(future.exception(), ValueError)


def test_wait_first_completed_all_completed_and_timeout(executor, gates, claim) -> None:
    """``wait``: with a timeout it returns (never raises) what is done; FIRST_COMPLETED returns as
    soon as one task ends; ALL_COMPLETED (the default) when all have."""
    pool = executor(3)
    futures = [gates.submit(pool, k) for k in range(3)]
    done, not_done = wait(futures, timeout=0.05)
    assert not done and len(not_done) == 3
    gates.release(1)
    done, not_done = wait(futures, timeout=RELEASE_TIMEOUT, return_when=FIRST_COMPLETED)
    assert [f.result() for f in done] == [1] and len(not_done) == 2
    gates.release(0)
    gates.release(2)
    done, not_done = wait(futures, timeout=RELEASE_TIMEOUT, return_when=ALL_COMPLETED)
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
    deadline = time.monotonic() + RELEASE_TIMEOUT
    while not all(f.done() for f in [running, *queued]):
        assert time.monotonic() < deadline, "queued work neither ran nor was cancelled"
        time.sleep(0.01)
    assert running.result() == "running"
    assert sum(f.cancelled() for f in queued) >= len(queued) - ahead


def test_pool_amortises_thread_creation(speedup) -> None:
    """"thread creation and destruction overhead is restricted to the initial creation of the
    pool": many short tasks on a pool beat one new thread per task (ratio measured)."""
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

        speedup(thread_per_task, pooled, [at_least("speedup", 1.5)], cores_needed=1,
                name=f"{tasks} tasks: pool vs a thread per task")
