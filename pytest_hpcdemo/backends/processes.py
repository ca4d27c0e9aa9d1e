"""Process pools: ``concurrent.futures.ProcessPoolExecutor`` with an explicit start method.

The start method is explicit because ``fork`` breaks once a session has run Numba's OpenMP-parallel
code or started threads (see NOTES: the fork trap); the plugin's default is ``forkserver``.
A worker that dies is named: ``BrokenProcessPool`` says only "terminated abruptly", the pools made
here add the dead worker's pid and its exit code or signal.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import EXTRA_QUEUED_CALLS, BrokenProcessPool
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

__all__ = ["EXTRA_QUEUED_CALLS", "NamingProcessPool", "exit_description", "make_process_pool_factory"]


def exit_description(exitcode: int) -> str:
    """``exit code 1`` or ``signal 11 (SIGSEGV)``, from a ``Process.exitcode``."""
    if exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
    except ValueError:
        return f"signal {-exitcode}"


class NamingProcessPool(ProcessPoolExecutor):
    """A ProcessPoolExecutor whose ``BrokenProcessPool`` names the workers that died, and whose
    workers can be killed (``kill_workers``) when a teardown's grace runs out."""

    def __init__(self, max_workers: int, mp_context: BaseContext) -> None:
        super().__init__(max_workers=max_workers, mp_context=mp_context)
        self.workers: dict[int, BaseProcess] = {}  # every worker ever started, by pid

    def _spawn_process(self) -> None:
        super()._spawn_process()  # type: ignore[misc]
        self.workers.update(self._processes)

    def dead_workers(self) -> str:
        """``worker pid 123 ended by signal 9 (SIGKILL)`` for each worker that has ended."""
        ended = [(pid, p.exitcode) for pid, p in list(self.workers.items()) if p.exitcode is not None]
        return "; ".join(f"worker pid {pid} ended by {exit_description(code)}" for pid, code in ended)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = super().submit(fn, *args, **kwargs)
        set_exception = future.set_exception

        def set_exception_naming_the_dead(exc: BaseException | None) -> None:
            # Runs in the pool's manager thread as it marks the pool broken, before the workers
            # still alive are terminated: the workers that ended by then are the ones that died.
            if isinstance(exc, BrokenProcessPool) and (dead := self.dead_workers()):
                named = BrokenProcessPool(f"{exc} ({dead})")
                named.__cause__ = exc.__cause__
                exc = named
            set_exception(exc)

        future.set_exception = set_exception_naming_the_dead  # type: ignore[method-assign,assignment]
        return future

    def kill_workers(self) -> list[int]:
        """SIGKILL every worker still alive; the pids killed."""
        killed = []
        for pid, process in list(self.workers.items()):
            if process.exitcode is None:
                process.kill()
                killed.append(pid)
        return killed


def make_process_pool_factory(start_method: str) -> Callable[[int], NamingProcessPool]:
    context = multiprocessing.get_context(start_method)

    def make_process_pool(max_workers: int) -> NamingProcessPool:
        return NamingProcessPool(max_workers, context)

    return make_process_pool
