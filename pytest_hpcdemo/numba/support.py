"""The Numba chapter's helpers: probes that run in a fresh interpreter, and the C twin's build.

A probe is a function here that ``run_probe`` starts as ``python -m pytest_hpcdemo.numba.support
NAME ARGS...`` (with a timeout) and whose JSON result it returns. What a probe measures depends on
the process being fresh: compile time, Numba's start-up, the on-disk cache, environment variables
read at import, and what a forked child inherits. Numba is imported inside the probes only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE_TIMEOUT_S = 180.0
BUILD_TIMEOUT_S = 120.0
# -ffp-contract=off: no fused multiply-add, which Numba never emits without fastmath, so that C and
# Numba compute the same operations and agree to the last bit.
C_FLAGS = ("-O2", "-ffp-contract=off", "-shared", "-fPIC")


def _timed_call(fn: Callable[[int], object], arg: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one call; CPU time counts every thread of this process."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    fn(arg)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return wall, cpu


def probe_first_calls(n: int) -> dict[str, Any]:
    """Numba's start-up (the first jitted call in a process, of a trivial function), then the
    kernel's first call, its steady state, and Numba's own compile-time accounting. Both functions
    are ``cache=True``: a second run with the same ``NUMBA_CACHE_DIR`` loads them from disk."""
    import numba

    from pytest_hpcdemo.core import workloads

    start_up = _timed_call(numba.njit(cache=True)(workloads.identity), 1)
    kernel = numba.njit(cache=True)(workloads.pi_midpoint)
    first = _timed_call(kernel, n)
    steady = min(_timed_call(kernel, n) for _ in range(5))
    metadata = kernel.get_metadata(kernel.signatures[0])  # None when loaded from the cache
    return {
        "start_up_s": start_up[0], "start_up_cpu_s": start_up[1],
        "first_s": first[0], "first_cpu_s": first[1],
        "steady_s": steady[0], "steady_cpu_s": steady[1],
        "numba_compile_s": metadata["timers"]["compiler_lock"] if metadata else None,
        "cache_hits": sum(kernel.stats.cache_hits.values()),
        "cache_misses": sum(kernel.stats.cache_misses.values()),
    }


def probe_threads(n: int) -> dict[str, Any]:
    """The thread count Numba read from the environment, and the effective parallelism of three
    ``prange`` calls (CPU time of the process / wall time) after a warm-up call."""
    import numba

    from pytest_hpcdemo.core import workloads

    kernel = workloads.numba_kernel("parallel")
    kernel(n)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(3):
        kernel(n)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"config_threads": numba.config.NUMBA_NUM_THREADS, "get_num_threads": numba.get_num_threads(),
            "parallelism": cpu / wall, "layer": numba.threading_layer()}


def probe_fork_after_parallel(n: int) -> dict[str, Any]:
    """Run the ``prange`` kernel here, then again in a worker of a ``fork`` pool: the fork trap.
    The threading layer comes from ``NUMBA_THREADING_LAYER`` in the environment."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    import numba

    from pytest_hpcdemo.core import workloads

    expected = workloads.numba_pi_parallel(n)
    layer = numba.threading_layer()
    vendor = None
    if layer == "omp":
        from numba.np.ufunc import omppool  # type: ignore[attr-defined]

        vendor = omppool.openmp_vendor
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        try:
            ok = pool.submit(workloads.numba_pi_parallel, n).result(timeout=PROBE_TIMEOUT_S / 2) == expected
            outcome = "ran" if ok else "wrong result"
        except BrokenProcessPool as exc:
            outcome = f"BrokenProcessPool: {exc}"
    return {"layer": layer, "openmp_vendor": vendor, "outcome": outcome}


PROBES: dict[str, Callable[[int], dict[str, Any]]] = {
    "first-calls": probe_first_calls,
    "threads": probe_threads,
    "fork-after-parallel": probe_fork_after_parallel,
}


def run_probe(name: str, n: int, env: dict[str, str] | None = None,
              timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Run probe ``name`` in a fresh interpreter with ``env`` added to ours; its result, plus the
    end of its stderr (``stderr``). A probe that exits non-zero raises RuntimeError with that."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_hpcdemo.numba.support", name, str(n)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"probe {name} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["stderr"] = proc.stderr[-2000:]
    return result


def c_compiler() -> list[str] | None:
    """The C compiler: ``$CC`` when set, else the first of cc, gcc, clang on PATH; None if none."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = next(filter(None, map(shutil.which, ("cc", "gcc", "clang"))), None)
    return [found] if found else None


def build_shared_library(compiler: list[str], source: Path, out_dir: Path) -> Path:
    """Compile ``source`` at -O2 into a shared library in ``out_dir`` (CalledProcessError on failure)."""
    target = out_dir / f"lib{source.stem}.so"
    subprocess.run([*compiler, *C_FLAGS, "-o", str(target), str(source)],
                   capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=True)
    return target


if __name__ == "__main__":
    print(json.dumps(PROBES[sys.argv[1]](int(sys.argv[2]))))
