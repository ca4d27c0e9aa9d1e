"""Memory as a measured quantity: what handing data to workers costs in copies, and what a worker
of each pool kind costs.

Guide (multiprocessing, Ray): arguments travel to processes pickled, so every worker gets its own
copy; ``multiprocessing.shared_memory`` hands over a name and the workers map the one block (Ray's
zero-copy ``get`` is measured the same way in benchmarks/test_ray_node.py). Copies are counted in
anonymous resident memory (``RssAnon``), where a copy lands and a mapped shared block does not; a
pool worker's cost is its unique memory (USS). These are memory figures, read once each from /proc,
not timings.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.node import memory

if TYPE_CHECKING:
    from pytest_hpcdemo.core.hardware import Hardware

pytestmark = pytest.mark.skipif(memory.anonymous_bytes() is None, reason="needs Linux's /proc/PID/status")

MIB = memory.MIB
# 64 MiB: above glibc's largest mmap threshold (32 MiB), so every copy is its own mapping, freed
# back to the system at once, and no reused heap hides or doubles a copy.
ARRAY_BYTES = 64 * MIB
THREAD_WORKERS = 8  # enough threads that a stray allocation elsewhere in the driver is a small share


def copy_workers(hardware: Hardware) -> int:
    """Every usable core, as far as the memory allows one array per worker eight times over."""
    fit = (hardware.memory_bytes or 0) // (8 * ARRAY_BYTES)
    return max(2, min(hardware.usable_cores, fit or hardware.usable_cores))


@pytest.fixture
def held_pool(hardware: Hardware, pytestconfig: pytest.Config) -> Iterator[tuple[ProcessPoolExecutor, int]]:
    """N workers sharing a barrier, each warmed up by holding a tiny array once."""
    workers = copy_workers(hardware)
    context = multiprocessing.get_context(pytestconfig.getoption("hpc_start_method"))
    with ProcessPoolExecutor(workers, mp_context=context, initializer=memory.join_barrier,
                             initargs=(context.Barrier(workers),)) as pool:
        yield pool, workers


def copies_made(pool: ProcessPoolExecutor, workers: int, args: list[tuple[Any, ...]]) -> float:
    """Copies of ARRAY_BYTES the workers hold: their anonymous memory holding the data, less their
    own holding a tiny array, summed over the workers."""
    tiny = list(pool.map(memory.held_anonymous_bytes, [np.ones(8)] * workers))
    held = list(pool.map(memory.held_anonymous_bytes, *zip(*args, strict=True)))
    before = dict(tiny)
    assert len(before) == workers and {pid for pid, _ in held} == set(before), "a worker held two tasks"
    return sum(b - before[pid] for pid, b in held) / ARRAY_BYTES


def test_pickling_to_n_workers_costs_n_copies_shared_memory_none(held_pool, claim) -> None:
    """An array handed to N process workers is pickled to each: N copies (between N - 0.5 and
    1.5 N: each worker holds its own and at most half a message besides). The same array in a
    ``multiprocessing.shared_memory`` block costs no copy (under 0.1 per worker): the workers map
    the one block, whose pages are shared memory, not anonymous."""
    pool, n = held_pool
    array = np.ones(ARRAY_BYTES // 8)
    pickled = copies_made(pool, n, [(array,)] * n)
    block = shared_memory.SharedMemory(create=True, size=ARRAY_BYTES)
    try:
        np.ndarray(array.shape, dtype=np.float64, buffer=block.buf)[:] = 1.0
        shared = copies_made(pool, n, [(array.shape, block.name)] * n)
    finally:
        block.close()
        block.unlink()
    claim(f"{ARRAY_BYTES // MIB} MiB to {n} workers: pickled {pickled:.2f} copies, "
          f"shared memory {shared:.2f}")
    assert n - 0.5 <= pickled <= 1.5 * n
    assert shared < 0.1 * n


def process_worker_bytes(method: str, workers: int) -> float:
    """Mean unique memory of a started, warmed process worker."""
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pids = {pid for pid, _ in pool.map(workloads.worker_identity, [0.05] * (4 * workers))}
        sizes = [memory.private_bytes(pid) for pid in pids]
    known = [s for s in sizes if s is not None]
    return sum(known) / len(known)


def thread_worker_bytes(workers: int) -> float:
    """Growth of this process's unique memory per started, warmed thread worker."""
    before = memory.private_bytes() or 0
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(workloads.worker_identity, [0.05] * (4 * workers)))
        grown = (memory.private_bytes() or 0) - before
    return grown / workers


def test_memory_per_worker_of_each_pool_kind(claim) -> None:
    """A thread worker costs a few pages of stack (under a quarter of a fork worker); a forked
    worker shares its parent's pages copy-on-write, so its unique memory is less than a spawned
    worker's, a fresh interpreter (here 2-3 MiB against 8-9 MiB); forkserver's workers fork from a
    small server process (measured, no claim: between the two)."""
    methods = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]
    if "fork" not in methods:
        pytest.skip("the fork start method is not available on this platform")
    per_worker = {"thread": thread_worker_bytes(THREAD_WORKERS)}
    per_worker.update({m: process_worker_bytes(m, 2) for m in methods})
    claim("unique memory per worker: " + ", ".join(f"{k} {v / MIB:.2f} MiB" for k, v in per_worker.items()))
    assert per_worker["thread"] < per_worker["fork"] / 4
    if "spawn" in per_worker:
        assert per_worker["fork"] < per_worker["spawn"]
