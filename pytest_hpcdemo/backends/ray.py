"""Ray executor backend: a ``concurrent.futures.Executor`` whose tasks are Ray tasks on the session's
cluster (the ``ray_cluster`` fixture starts it or connects to ``RAY_ADDRESS``).

At most ``max_workers`` tasks are handed to Ray at a time; the rest wait here, where ``cancel()``
still reaches them. Each task asks for ``CPUs / max_workers`` of the cluster (one CPU at most), so
that ``max_workers`` tasks can run at once even when that is more than the cluster's CPUs, as a
pool's workers would. What it cannot offer, declared on the Backend: a running task is not
cancelled through the ``Future`` (``ray.cancel`` can, see benchmarks/test_ray.py), and tasks get
copies of their arguments, not the caller's memory.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any

from ..core.hardware import package_version
from ..core.markers import INSTALL_HINT
from . import Backend

if TYPE_CHECKING:
    from ray import ObjectRef

# How long the collector waits on the running tasks before it looks again at what was submitted.
POLL_S = 0.05
# A result that ray.wait found ready is local: getting it takes no wait, this bounds it regardless.
GET_TIMEOUT_S = 30.0
# Ray's resource quantities have 4 decimals; a share is rounded down so that max_workers of them fit.
RESOURCE_STEP = 10_000


def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """``submit``/``map``/``shutdown`` over Ray tasks, with ``max_workers`` tasks in flight at most."""

    def __init__(self, max_workers: int) -> None:
        import ray

        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        if not ray.is_initialized():
            raise RuntimeError("no Ray cluster in this process: request the ray_cluster fixture first")
        cpus = ray.cluster_resources().get("CPU", 1.0)
        share = min(1.0, math.floor(cpus / max_workers * RESOURCE_STEP) / RESOURCE_STEP)
        self._task = ray.remote(_call).options(num_cpus=share, max_retries=0)
        self._max_workers = max_workers
        self._lock = threading.Condition()
        self._queue: deque[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = deque()
        self._running: dict[ObjectRef[Any], Future[Any]] = {}
        self._shutdown = False
        self._collector = threading.Thread(target=self._collect, name="hpcdemo-ray-executor", daemon=True)
        self._collector.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._queue.append((future, fn, args, kwargs))
            self._dispatch()
            self._lock.notify_all()
        return future

    def _dispatch(self) -> None:
        """Hand queued tasks to Ray while fewer than max_workers run (the lock is held)."""
        while self._queue and len(self._running) < self._max_workers:
            future, fn, args, kwargs = self._queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                self._running[self._task.remote(fn, args, kwargs)] = future
            except Exception as exc:  # e.g. an argument that cannot be pickled
                future.set_exception(exc)

    def _collect(self) -> None:
        """Settle each future as its task ends, then dispatch what waits; ends after shutdown."""
        import ray

        while True:
            with self._lock:
                self._dispatch()
                while not self._running:
                    if self._shutdown and not self._queue:
                        return
                    self._lock.wait()
                    self._dispatch()
                refs = list(self._running)
            try:
                ready, _ = ray.wait(refs, num_returns=1, timeout=POLL_S)
            except Exception as exc:  # the cluster went away: no future is left waiting forever
                self._fail_all(exc)
                return
            for ref in ready:
                with self._lock:
                    future = self._running.pop(ref)
                try:
                    result = ray.get(ref, timeout=GET_TIMEOUT_S)
                except Exception as exc:  # RayTaskError is also the task's exception class
                    future.set_exception(exc)
                else:
                    future.set_result(result)

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            self._shutdown = True
            futures = [*self._running.values()]
            futures += [f for f, *_ in self._queue if f.set_running_or_notify_cancel()]
            self._running.clear()
            self._queue.clear()
        for future in futures:
            future.set_exception(exc)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft()[0].cancel()
            self._lock.notify_all()
        if wait:
            self._collector.join()


def ray_backend() -> Backend:
    missing = None if package_version("ray") else f"Ray is not installed: {INSTALL_HINT.format(extra='ray')}"
    return Backend("ray", RayExecutor, cancels_running=False, shares_memory=False, missing=missing)
