"""Thread pools: ``concurrent.futures.ThreadPoolExecutor``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor


def make_thread_pool(max_workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="hpcdemo")
