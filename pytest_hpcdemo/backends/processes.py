"""Process pools: ``concurrent.futures.ProcessPoolExecutor`` with an explicit start method.

The start method is explicit because ``fork`` breaks once a session has run Numba's OpenMP-parallel
code or started threads (see NOTES: the fork trap); the plugin's default is ``forkserver``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import EXTRA_QUEUED_CALLS

__all__ = ["EXTRA_QUEUED_CALLS", "make_process_pool_factory"]


def make_process_pool_factory(start_method: str) -> Callable[[int], ProcessPoolExecutor]:
    context = multiprocessing.get_context(start_method)

    def make_process_pool(max_workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=max_workers, mp_context=context)

    return make_process_pool
