"""Bounded pool teardown: a pool whose tasks never end cannot hold a test, or the session, forever.

``shutdown(wait=True)`` waits for every running task, however long it takes. Here the wait has a
grace period; after it the pool's worker processes are killed (a thread cannot be killed: a stuck
thread pool is handed to ``pool_guard``, which ends the session anyway) and the caller learns which
tasks were still pending, so that the test fails naming them instead of hanging.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from typing import Any, TypeVar

# How long a pool's running tasks get to end after the test: any task of the chapters ends in well
# under a second once its gate is released, so this is a bound on hanging, not on work.
GRACE_S = 10.0
# After the workers are killed, how long the pool's own threads get to notice and end.
KILLED_GRACE_S = 5.0
DESCRIPTION_CHARS = 120
PoolT = TypeVar("PoolT", bound=Executor)


class PoolTeardownError(RuntimeError):
    """A pool's tasks did not end within the grace period; the message names them."""


def describe_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """``name(args...)``, shortened: how a pending task is named in a failure."""
    parts = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    text = f"{getattr(fn, '__qualname__', repr(fn))}({', '.join(parts)})"
    return text if len(text) <= DESCRIPTION_CHARS else text[:DESCRIPTION_CHARS - 3] + "..."


def track(pool: PoolT) -> PoolT:
    """Record what is submitted to ``pool`` (``map`` goes through ``submit`` too), for naming
    pending tasks at teardown. Returns the same pool."""
    tasks: dict[Future[Any], str] = {}
    submit = pool.submit

    def tracked_submit(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future = submit(fn, *args, **kwargs)
        tasks[future] = describe_call(fn, args, kwargs)
        return future

    pool.submit = tracked_submit  # type: ignore[method-assign]
    pool.hpcdemo_tasks = tasks  # type: ignore[attr-defined]
    return pool


def pending_tasks(pool: Executor) -> list[str]:
    """The tracked tasks of ``pool`` that have not ended."""
    tasks: dict[Future[Any], str] = getattr(pool, "hpcdemo_tasks", {})
    return [name for future, name in list(tasks.items()) if not future.done()]


def worker_threads(pool: Executor) -> list[threading.Thread]:
    """A ThreadPoolExecutor's worker threads (empty for other pools)."""
    return list(getattr(pool, "_threads", ()))


def _shutdown_in_background(pool: Executor) -> threading.Thread:
    waiter = threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                              name="hpcdemo-pool-shutdown", daemon=True)
    waiter.start()
    return waiter


def shutdown_within(pool: Executor, grace_s: float = GRACE_S) -> None:
    """Shut ``pool`` down, cancelling queued tasks and waiting ``grace_s`` at most for running ones.

    Past the grace, a process pool's workers are killed; a thread pool's stuck threads are left to
    the session's leak guard. Either way PoolTeardownError names the tasks that were still pending.
    """
    kill = getattr(pool, "kill_workers", None)
    waiter = _shutdown_in_background(pool)
    waiter.join(grace_s)
    if not waiter.is_alive():
        return
    pending = pending_tasks(pool)
    killed = kill() if kill else []
    if killed:
        waiter.join(KILLED_GRACE_S)
    stuck = [t.name for t in worker_threads(pool) if t.is_alive()]
    what = ", ".join(pending) if pending else "tasks not tracked by the plugin"
    action = (f"killed worker pids {', '.join(map(str, killed))}" if killed else
              f"threads {', '.join(stuck)} cannot be killed and are left running" if stuck else
              "the pool's shutdown is still waiting")
    raise PoolTeardownError(f"{type(pool).__name__} still had tasks running {grace_s:g} s after the "
                            f"test: {what}; {action}")


@contextmanager
def bounded(pool: PoolT, grace_s: float = GRACE_S) -> Iterator[PoolT]:
    """``with bounded(ThreadPoolExecutor(2)) as pool:``: like the executor's own ``with``, but its
    shutdown waits ``grace_s`` at most (see ``shutdown_within``)."""
    try:
        yield track(pool)
    finally:
        shutdown_within(pool, grace_s)
