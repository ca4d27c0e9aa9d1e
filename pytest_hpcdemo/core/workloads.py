"""The kernels the benchmarks run: top-level (so process pools can pickle them) and sized by parameter.

Sizes are fixed per claim, never calibrated from a timing: under load a calibration picks a smaller
problem and the claim then measures overhead instead of work.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import FunctionType
from typing import Any


def cpu_bound(n: int) -> int:
    """Pure-Python integer arithmetic that holds the GIL throughout: about 0.1 s per 1.5 million."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def io_wait(seconds: float) -> float:
    """An IO-bound task: waits without using the CPU (``time.sleep`` releases the GIL)."""
    time.sleep(seconds)
    return seconds


def numpy_ufuncs(size: int, repeats: int) -> float:
    """Elementwise NumPy work on one thread: the ufunc loops release the GIL on large arrays."""
    import numpy as np

    a = np.linspace(0.0, 1.0, size)
    out = np.empty_like(a)
    for _ in range(repeats):
        np.sin(a, out=out)
        np.sqrt(out, out=out)
    return float(out[-1])


def identity(x: Any) -> Any:
    """A task that does nothing: what remains is the executor's own overhead."""
    return x


def array_nbytes(array: Any) -> int:
    """Receives an array through the executor (pickled on the way) and touches it."""
    return int(array.nbytes)


def shared_array_nbytes(name: str, shape: tuple[int, ...], dtype: str) -> int:
    """Attaches to a ``multiprocessing.shared_memory`` block by name: no copy of the data travels."""
    from multiprocessing import shared_memory

    import numpy as np

    block = shared_memory.SharedMemory(name=name)
    try:
        view = np.ndarray(shape, dtype=dtype, buffer=block.buf)
        return int(view.nbytes)
    finally:
        del view
        block.close()


def wait_for_file(path: str, value: Any = None, timeout: float = 60.0, done_path: str | None = None,
                  started_path: str | None = None) -> Any:
    """Creates ``started_path`` (when given), blocks until ``path`` exists, creates ``done_path``
    (when given) and returns ``value``: a task whose end the test controls, and whose start and
    end it can see without its future.

    Works the same in a thread, a process, an MPI rank or a Ray worker on this machine, so that the
    executor conformance suite orders completions without relying on sleeps.
    """
    deadline = time.monotonic() + timeout
    target = Path(path)
    if started_path:
        Path(started_path).touch()
    while not target.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not released within {timeout} s")
        time.sleep(0.002)
    if done_path:
        Path(done_path).touch()
    return value


def touch(path: str) -> None:
    Path(path).touch()


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def maybe_raise(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"task {x} failed")
    return x


def worker_identity(seconds: float = 0.01) -> tuple[int, int]:
    """Which process and thread ran this task (after a short wait, so that tasks overlap)."""
    time.sleep(seconds)
    return os.getpid(), threading.get_ident()


def append_pid(values: list[int]) -> int:
    """Appends this process's pid to ``values`` and returns it: on a pickled copy in another
    process, the caller's list stays as it was."""
    values.append(os.getpid())
    return os.getpid()


def die(how: str = "exit", pid_file: str | None = None, caller_pid: int | None = None) -> None:
    """Ends the worker process abruptly: ``exit`` (``os._exit(3)``), ``kill`` (SIGKILL, as the OOM
    killer does) or ``segfault`` (SIGSEGV); first writes its pid to ``pid_file`` when given.
    Refuses to end ``caller_pid``: a "process" pool that runs tasks in the caller would kill it."""
    import signal

    if os.getpid() == caller_pid:
        raise RuntimeError(f"die() ran in the caller's process {caller_pid}, not in a pool worker")
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), {"kill": signal.SIGKILL, "segfault": signal.SIGSEGV}[how])


class Counter:
    """A shared counter for the race demonstration."""

    def __init__(self) -> None:
        self.value = 0


def racy_increments(counter: Counter, n: int, lock: threading.Lock | None = None) -> None:
    """Read-modify-write ``n`` times; ``time.sleep(0)`` between read and write lets others interleave."""
    for _ in range(n):
        if lock is None:
            current = counter.value
            time.sleep(0)
            counter.value = current + 1
        else:
            with lock:
                current = counter.value
                time.sleep(0)
                counter.value = current + 1


# ---------------------------------------------------------------------------------------------
# Numba: one kernel, the midpoint rule for pi = integral of 4 / (1 + x^2) over [0, 1], in every
# flavour the Numba chapter compares. Numba is imported inside the functions that need it.

NUMBA_FLAVOURS = ("njit", "nogil", "parallel")
PI_SIGNATURE = "float64(int64)"


# The loop of pi_midpoint: the built-in range, except in the copy that numba_kernel("parallel")
# compiles with numba.prange in its place (one kernel's code for every flavour).
prange = range


def pi_midpoint(n: int) -> float:
    """Pure Python, n intervals. Numba compiles this very function (``numba_kernel``), and
    benchmarks/c_kernels/pi_midpoint.c is its C twin: same operations in the same order, so the
    three agree to the last bit."""
    h = 1.0 / n
    total = 0.0
    for i in prange(n):
        x = (i + 0.5) * h
        total += 4.0 / (1.0 + x * x)
    return total * h


def pi_midpoint_numpy(n: int) -> float:
    """The same sum as NumPy expressions: one temporary array per operation, pairwise summation."""
    import numpy as np

    h = 1.0 / n
    x = (np.arange(n) + 0.5) * h
    return float(np.sum(4.0 / (1.0 + x * x)) * h)


@cache
def numba_kernel(flavour: str) -> Callable[[int], float]:
    """``pi_midpoint`` compiled by Numba, eagerly (for ``PI_SIGNATURE``), so that compilation is over
    when this returns and never lands in a timed call: ``njit`` holds the GIL while it runs,
    ``nogil`` releases it, ``parallel`` splits the loop with ``prange`` over Numba's threads."""
    import numba

    if flavour == "njit":
        return numba.njit(PI_SIGNATURE)(pi_midpoint)
    if flavour == "nogil":
        return numba.njit(PI_SIGNATURE, nogil=True)(pi_midpoint)
    if flavour == "parallel":  # the same code, its loop split over Numba's threads
        pi_midpoint_prange = FunctionType(pi_midpoint.__code__, {**globals(), "prange": numba.prange},
                                          "pi_midpoint_prange")
        return numba.njit(PI_SIGNATURE, parallel=True)(pi_midpoint_prange)
    raise ValueError(f"unknown Numba flavour {flavour!r}; expected one of {NUMBA_FLAVOURS}")


def numba_pi_parallel(n: int) -> float:
    """The ``prange`` kernel, picklable for pool workers (each worker compiles its own copy)."""
    return numba_kernel("parallel")(n)
