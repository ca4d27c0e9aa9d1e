"""Scaling to the node: every backend that can scale, at 1, 2, 4, ... workers and at the usable core
count itself, each point its own interleaved claim, so that the report draws efficiency, the
Karp-Flatt serial fraction and an Amdahl fit per backend.

Ray tasks are the same study in benchmarks/test_ray_node.py, next to the Ray chapter, so that
the session's Ray cluster is up for the Ray tests only.

Guide: processes get round the GIL, threads do not (unless the build is free-threaded); Numba's
``nogil`` and ``prange`` run compiled code on several cores; Ray spreads tasks over its workers.
Up to four workers a point is strong scaling (every share serially against the same shares on N
workers, the same CPU work on both sides); above, it measures efficiency directly (one worker's
share serially), so a round lasts about two shares at any N and a 128-core node finishes the
study in minutes (``pytest_hpcdemo.node.scaling``). The claim at N workers: efficiency at least the
scaling floor of the physical cores among them over N; at the usable core count, that is the claim
on the whole node. One worker uses one core (parallelism), whatever the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.core.session import hardware_of
from pytest_hpcdemo.node import scaling

if TYPE_CHECKING:
    from pytest_hpcdemo.core.hardware import Hardware
    from pytest_hpcdemo.node.limits import Limits

# Fixed task sizes (never calibrated from a timing): ~0.05 s each here, two per worker, so one
# worker's share (~0.1 s) dwarfs a pool's dispatch cost even at 128 workers.
CPU_TASK = 750_000
NUMBA_TASK = 30_000_000  # midpoint intervals: ~0.05 s compiled
SHARE = 2


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The points of this machine: 1, 2, 4, ... and the usable core count."""
    if "workers" in metafunc.fixturenames:
        counts = scaling.points(hardware_of(metafunc.config).usable_cores)
        metafunc.parametrize("workers", counts, ids=[f"x{n}" for n in counts])


def python_share() -> None:
    for _ in range(SHARE):
        workloads.cpu_bound(CPU_TASK)


def pool_point(speedup: Any, benchmark: Any, pool: Executor, backend: str, hardware: Hardware, workers: int,
               scales: bool = True) -> None:
    work = scaling.work_per_point(workers, CPU_TASK, share=SHARE)

    def parallel() -> None:
        list(pool.map(workloads.cpu_bound, [work.task_size] * work.tasks))

    scaling.measure_point(speedup, benchmark.extra_info, backend, "pure-Python CPU-bound", work, python_share,
                          parallel, scaling.physical_cores(hardware), scales)


def test_processes_scale_to_the_node(speedup, benchmark, hardware, pytestconfig, machine_limits: Limits,
                                     claim, workers: int) -> None:
    """Processes scale CPU-bound work: N workers keep the efficiency floor of the physical cores
    among them, up to the whole node, where the speedup is also set against the process-pool
    ideal measured in this session (``machine_limits``)."""
    import multiprocessing

    context = multiprocessing.get_context(pytestconfig.getoption("hpc_start_method"))
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            pool_point(speedup, benchmark, pool, "processes", hardware, workers)
    finally:
        point = benchmark.extra_info.get("scaling")
        if point and workers == machine_limits.processes:
            fraction = point["speedup"] / machine_limits.pool_ideal
            point["fraction_of_pool_ideal"] = fraction
            claim(f"speedup {point['speedup']:.2f} = {fraction:.0%} of the process-pool ideal "
                  f"{machine_limits.pool_ideal:.2f}x measured this session")


def test_threads_scale_only_without_the_gil(speedup, benchmark, hardware, workers: int) -> None:
    """Threads do not scale pure-Python work under the GIL: one core's worth of CPU whatever N
    (a flat speedup curve). With the GIL off the claim flips to scaling."""
    with ThreadPoolExecutor(workers) as pool:
        pool_point(speedup, benchmark, pool, "threads", hardware, workers, scales=not hardware.gil_enabled)


@pytest.fixture(scope="module")
def numba_kernels() -> dict[str, Callable[[int], float]]:
    return {flavour: workloads.numba_kernel(flavour) for flavour in workloads.NUMBA_FLAVOURS}


@pytest.mark.numba
def test_numba_nogil_threads_scale_to_the_node(speedup, benchmark, hardware, numba_kernels,
                                               workers: int) -> None:
    """A ``nogil=True`` kernel on N threads keeps the efficiency floor up to the whole node."""
    kernel = numba_kernels["nogil"]
    work = scaling.work_per_point(workers, NUMBA_TASK, share=SHARE)

    def one_share() -> None:
        for _ in range(work.share):
            kernel(work.task_size)

    with ThreadPoolExecutor(workers) as pool:
        def parallel() -> None:
            list(pool.map(kernel, [work.task_size] * work.tasks))

        scaling.measure_point(speedup, benchmark.extra_info, "numba nogil threads", "compiled midpoint rule",
                              work, one_share, parallel, scaling.physical_cores(hardware))


@pytest.fixture
def numba_threads(workers: int) -> Iterator[int]:
    """Numba's thread count set to the point's workers, and restored afterwards."""
    import numba

    if workers > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} is below {workers} workers: "
                    f"unset it or raise it to run this point")
    default = numba.get_num_threads()
    numba.set_num_threads(workers)
    try:
        yield workers
    finally:
        numba.set_num_threads(default)


@pytest.mark.numba
def test_numba_prange_scales_to_the_node(speedup, benchmark, hardware, numba_kernels, numba_threads: int,
                                         workers: int) -> None:
    """``prange`` on N of Numba's threads keeps the efficiency floor up to the whole node, against
    the same loop compiled serially (``@njit``)."""
    serial_kernel, parallel_kernel = numba_kernels["njit"], numba_kernels["parallel"]
    work = scaling.work_per_point(workers, NUMBA_TASK, share=SHARE)
    scaling.measure_point(speedup, benchmark.extra_info, "numba prange", "compiled midpoint rule", work,
                          lambda: serial_kernel(work.share * work.task_size),
                          lambda: parallel_kernel(work.tasks * work.task_size),
                          scaling.physical_cores(hardware))
