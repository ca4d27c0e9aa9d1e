"""Executor backends behind one protocol, so that one conformance suite runs on all of them.

Each backend says what it cannot offer (cancelling running work, tasks that are handed to a worker
before one is free) instead of the tests guessing. MPI and Ray backends register here too.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

BACKEND_NAMES = ("thread", "process", "mpi", "ray")  # fixtures.BACKEND_NAMES repeats it for cheap collection


@dataclass(frozen=True)
class Backend:
    """How to make an executor of one kind, and the semantics it offers."""

    name: str
    make: Callable[[int], Executor]
    # A running task can be cancelled (no concurrent.futures executor can).
    cancels_running: bool = False
    # Tasks beyond the executing ones that are already handed to the workers and so can no longer
    # be cancelled: ProcessPoolExecutor's call queue holds max_workers + 1 calls.
    prefetch_per_worker: int = 0
    prefetch_extra: int = 0
    # Tasks share the caller's memory (threads) rather than receiving pickled copies.
    shares_memory: bool = False
    # Why this backend cannot run here (missing package or launcher), None when it can.
    missing: str | None = None

    def prefetched(self, max_workers: int) -> int:
        """How many queued tasks a pool of ``max_workers`` may already have made uncancellable."""
        return self.prefetch_per_worker * max_workers + self.prefetch_extra


def get_backend(name: str, start_method: str) -> Backend:
    if name == "thread":
        from .threads import make_thread_pool

        return Backend("thread", make_thread_pool, shares_memory=True)
    if name == "process":
        from .processes import EXTRA_QUEUED_CALLS, make_process_pool_factory

        return Backend("process", make_process_pool_factory(start_method),
                       prefetch_per_worker=1, prefetch_extra=EXTRA_QUEUED_CALLS)
    if name == "mpi":
        from .mpi import mpi_backend

        return mpi_backend()
    if name == "ray":
        from .ray import ray_backend

        return ray_backend()
    raise ValueError(f"unknown executor backend {name!r}; known: {', '.join(BACKEND_NAMES)}")
