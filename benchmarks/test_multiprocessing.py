"""Chapter "Multiple Processing" (an empty heading in the guide: these claims are ours).

Processes sidestep the GIL (see test_gil.py for the speedup) but pay for it: starting workers,
pickling every argument and result, and one message per task. Each test measures one of those
costs against its alternative in the same run.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest

from pytest_hpcdemo.backends.processes import make_process_pool_factory
from pytest_hpcdemo.backends.teardown import bounded
from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.core.measure import at_least, at_most

BIG, SMALL = 32 * 2**20, 32 * 2**10  # bytes of float64 data handed to a worker
HANDOFFS = 5  # per timed call, so that one call lasts long enough to time
TINY_TASKS, CHUNK = 4000, 200


@pytest.fixture
def start_method(pytestconfig: pytest.Config) -> str:
    return pytestconfig.getoption("hpc_start_method")


@pytest.fixture
def pool(start_method: str) -> Iterator[ProcessPoolExecutor]:
    with bounded(make_process_pool_factory(start_method)(2)) as p:
        p.submit(workloads.identity, None).result(timeout=60)
        yield p


def start_pool_and_run_one(method: str) -> None:
    """Start-up cost of a two-worker pool: start it, run one task on each worker, shut it down."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as p:
        list(p.map(workloads.worker_identity, [0.0, 0.0]))


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_start_methods_cost(speedup, method: str) -> None:
    """Starting a pool by ``fork`` (copy the parent) or from a warm ``forkserver`` is cheaper than
    ``spawn``, which starts a fresh interpreter per worker and re-imports everything. "Cheaper" is
    the bound: the start-up with ``method`` takes less time than with spawn (speedup above 1).
    Measured here: fork 9-37 ms, forkserver 56-164 ms, spawn 183-199 ms for two workers."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method!r} is not available on this platform")
    speedup(lambda: start_pool_and_run_one("spawn"), lambda: start_pool_and_run_one(method),
            [at_least("speedup", 1.0)], cores_needed=1, name=f"pool start-up: {method} vs spawn")


class SharedArray:
    """A NumPy array in a ``multiprocessing.shared_memory`` block, handed over by name."""

    def __init__(self, nbytes: int) -> None:
        self.block = shared_memory.SharedMemory(create=True, size=nbytes)
        self.array = np.ndarray((nbytes // 8,), dtype=np.float64, buffer=self.block.buf)
        self.array[:] = 1.0

    def handoff(self, pool: ProcessPoolExecutor) -> None:
        for _ in range(HANDOFFS):
            pool.submit(workloads.shared_array_nbytes, self.block.name, self.array.shape, "float64").result()

    def close(self) -> None:
        del self.array
        self.block.close()
        self.block.unlink()


@pytest.fixture
def shared() -> Iterator[dict[int, SharedArray]]:
    arrays = {n: SharedArray(n) for n in (BIG, SMALL)}
    yield arrays
    for a in arrays.values():
        a.close()


def pickled_handoff(pool: ProcessPoolExecutor, array: np.ndarray) -> None:
    for _ in range(HANDOFFS):
        pool.submit(workloads.array_nbytes, array).result()


def test_pickling_cost_grows_with_size(speedup, pool) -> None:
    """Every argument travels to a worker pickled: handing over 32 MiB costs far more than 32 KiB."""
    big, small = np.ones(BIG // 8), np.ones(SMALL // 8)
    speedup(lambda: pickled_handoff(pool, big), lambda: pickled_handoff(pool, small),
            [at_least("speedup", 3.0)], cores_needed=1, name="pickled 32 MiB vs 32 KiB")


def test_shared_memory_cost_does_not_grow_with_size(speedup, pool, shared) -> None:
    """``multiprocessing.shared_memory`` hands over a name, not the data: 32 MiB costs about what
    32 KiB does (the big one may be at most 2x slower)."""
    speedup(lambda: shared[BIG].handoff(pool), lambda: shared[SMALL].handoff(pool),
            [at_most("speedup", 2.0)], cores_needed=1, name="shared memory 32 MiB vs 32 KiB")


def test_shared_memory_beats_pickling_large_arrays(speedup, pool, shared) -> None:
    """For a large array, shared memory is much faster than pickling it to the worker."""
    big = shared[BIG].array.copy()
    speedup(lambda: pickled_handoff(pool, big), lambda: shared[BIG].handoff(pool),
            [at_least("speedup", 3.0)], cores_needed=1, name="32 MiB: shared memory vs pickled")


def test_chunksize_amortises_tiny_tasks(speedup, pool) -> None:
    """``map(..., chunksize=n)`` sends tasks in batches: for many tiny tasks the per-task message
    dominates, and batching removes most of it."""
    items = list(range(TINY_TASKS))
    speedup(lambda: list(pool.map(workloads.identity, items, chunksize=1)),
            lambda: list(pool.map(workloads.identity, items, chunksize=CHUNK)),
            [at_least("speedup", 3.0)], cores_needed=1,
            name=f"{TINY_TASKS} tiny tasks: chunksize {CHUNK} vs 1")


@pytest.mark.parametrize("death, ended_by", [("exit", "exit code 3"), ("kill", "signal 9 (SIGKILL)"),
                                             ("segfault", "signal 11 (SIGSEGV)")],
                         ids=["exit", "kill", "segfault"])
def test_dead_worker_breaks_the_pool_clearly(start_method: str, death: str, ended_by: str,
                                             tmp_path: Path, claim) -> None:
    """A worker that dies (segfault, OOM kill, ``os._exit``) fails its future with
    ``BrokenProcessPool`` and a message that says so and names the worker: its pid and its exit
    code or signal (the plugin's pools add those); the pool refuses new work; a new pool works and
    the session goes on."""
    make_pool = make_process_pool_factory(start_method)
    pid_file = tmp_path / "pid"
    with bounded(make_pool(1)) as broken:
        future = broken.submit(workloads.die, death, str(pid_file), os.getpid())
        with pytest.raises(BrokenProcessPool, match="terminated abruptly") as info:
            future.result(timeout=60)
        with pytest.raises(BrokenProcessPool):
            broken.submit(workloads.identity, 1)
    assert f"worker pid {pid_file.read_text()} ended by {ended_by}" in str(info.value)
    with bounded(make_pool(1)) as fresh:
        assert fresh.submit(workloads.identity, 41).result(timeout=60) == 41
    claim(f"BrokenProcessPool: ...{str(info.value)[-50:]}; a new pool works")
