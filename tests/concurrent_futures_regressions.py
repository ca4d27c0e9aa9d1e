"""A pytest plugin (``-p concurrent_futures_regressions``) that plants one regression of
``concurrent.futures``, named by ``HPCDEMO_REGRESSION``, before the chapter modules import it.

tests/test_fail_fast.py runs the chapters under each one and checks that the run ends in time,
failing the test whose name says which semantics broke.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import _base, process, thread
from typing import Any

import pytest


def never_cancel(self: concurrent.futures.Future[Any]) -> bool:
    return False


def map_in_completion_order(self: concurrent.futures.Executor, fn: Callable[..., Any],
                            *iterables: Iterable[Any], timeout: float | None = None,
                            chunksize: int = 1) -> Iterator[Any]:
    futures = [self.submit(fn, *args) for args in zip(*iterables, strict=False)]
    return (f.result() for f in ORIGINAL_AS_COMPLETED(futures, timeout))


Futures = Iterable[concurrent.futures.Future[Any]]


def as_completed_in_submission_order(fs: Futures, timeout: float | None = None) -> Futures:
    for future in list(fs):
        concurrent.futures.wait([future], timeout)
        if not future.done():
            raise TimeoutError("future not done in time")
        yield future


class ThreadsPosingAsProcesses(thread.ThreadPoolExecutor):
    def __init__(self, max_workers: int | None = None, mp_context: Any = None, initializer: Any = None,
                 initargs: tuple[Any, ...] = (), *, max_tasks_per_child: int | None = None) -> None:
        super().__init__(max_workers, initializer=initializer, initargs=initargs)


def one_worker(init: Callable[..., None]) -> Callable[..., None]:
    def init_with_one_worker(self: Any, max_workers: int | None = None, *args: Any, **kwargs: Any) -> None:
        init(self, 1, *args, **kwargs)

    return init_with_one_worker


ORIGINAL_AS_COMPLETED = _base.as_completed


def plant(name: str) -> None:
    if name == "cancel":
        _base.Future.cancel = never_cancel  # type: ignore[method-assign]
    elif name == "map-order":
        _base.Executor.map = map_in_completion_order  # type: ignore[method-assign]
    elif name == "as-completed-order":
        _base.as_completed = concurrent.futures.as_completed = as_completed_in_submission_order
    elif name == "process-threads":
        process.ProcessPoolExecutor = concurrent.futures.ProcessPoolExecutor = ThreadsPosingAsProcesses  # type: ignore
    elif name == "one-worker":
        thread.ThreadPoolExecutor.__init__ = one_worker(thread.ThreadPoolExecutor.__init__)  # type: ignore
        process.ProcessPoolExecutor.__init__ = one_worker(process.ProcessPoolExecutor.__init__)  # type: ignore
    else:
        raise pytest.UsageError(f"unknown HPCDEMO_REGRESSION {name!r}")


plant(os.environ["HPCDEMO_REGRESSION"])

