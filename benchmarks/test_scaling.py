"""Strong scaling of CPU-bound pure-Python work: the same total work on 1, 2, 4, 8 workers, as
processes and as threads, so that ``--hpc-report`` draws speedup against workers with an Amdahl fit.

Guide: processes get round the GIL, threads do not. Each point is its own interleaved measurement
(serial vs pool of N); points above the usable cores are skipped with the reason.
"""

from __future__ import annotations

from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

from pytest_hpcdemo import workloads
from pytest_hpcdemo.measure import SINGLE_CORE_CEILING, at_least, at_most, median_ci_rank, scaling_floor

# Fixed total work (never calibrated from a timing): 8 tasks of ~0.03 s each here, split over workers;
# smaller tasks let pool overhead pull the 2-worker speedup towards its floor.
TASKS, CPU_TASK = 8, 400_000
WORKERS = [pytest.param(n, marks=pytest.mark.cores(n), id=f"x{n}") for n in (1, 2, 4, 8)]


def _scaling_point(benchmark: Any, name: str, backend: str, workers: int) -> None:
    """The point the scaling plot draws, from the figures the measurement saved (also when skipped)."""
    figures = benchmark.extra_info.get("claims", {}).get(name)
    if not figures:
        return
    pairs = zip(figures["baseline_s"], figures["candidate_s"], strict=True)
    ratios = sorted(b / c for b, c in pairs if c > 0)
    k = median_ci_rank(len(ratios), figures["confidence"])
    ci = [ratios[k - 1], ratios[-k]] if k else [ratios[0], ratios[-1]]
    benchmark.extra_info["scaling"] = {
        "workload": "pure-Python CPU-bound", "backend": backend, "workers": workers,
        "speedup": figures["speedup_median"], "ci": ci,
        # Other processes took the cores in most rounds: the point shows their load, not scaling.
        "contested": figures["contested_rounds"] * 2 >= figures["rounds"],
    }


def _serial() -> None:
    for _ in range(TASKS):
        workloads.cpu_bound(CPU_TASK)


def _measure(speedup: Any, benchmark: Any, pool: Executor, backend: str, workers: int, claims: list) -> None:
    name = f"{backend} x{workers} vs serial ({TASKS} tasks)"

    def parallel() -> None:
        list(pool.map(workloads.cpu_bound, [CPU_TASK] * TASKS))

    try:
        speedup(_serial, parallel, claims, cores_needed=workers, same_work=True, name=name)
    finally:
        _scaling_point(benchmark, name, backend, workers)


@pytest.mark.parametrize("workers", WORKERS)
def test_processes_scale_with_workers(speedup, benchmark, hardware, pytestconfig, workers: int) -> None:
    """Processes scale CPU-bound work: N workers give at least the scaling floor of N (one worker uses
    one core), so the speedup curve follows the ideal line up to the usable cores."""
    import multiprocessing

    context = multiprocessing.get_context(pytestconfig.getoption("hpc_start_method"))
    claims = ([at_least("speedup", scaling_floor(min(workers, hardware.cpu_bound_cores)))] if workers > 1
              else [at_most("parallelism", SINGLE_CORE_CEILING)])
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        _measure(speedup, benchmark, pool, "processes", workers, claims)


@pytest.mark.parametrize("workers", WORKERS)
def test_threads_scale_with_workers_only_without_the_gil(speedup, benchmark, hardware, workers: int) -> None:
    """Threads scale pure-Python work only without the GIL. With it: whatever N, one core's worth
    of CPU, so a flat speedup curve (serial fraction near 1). With the GIL off the claim flips:
    speedup and parallelism reach the scaling floor of N."""
    # Effective parallelism is the robust GIL signal (the speedup is drawn, its noise would only
    # make the claim inconclusive); one worker uses one core, GIL or not.
    claims = [at_most("parallelism", SINGLE_CORE_CEILING)]
    if workers > 1 and not hardware.gil_enabled:
        claims = [at_least("speedup", scaling_floor(min(workers, hardware.cpu_bound_cores))),
                  at_least("parallelism", scaling_floor(workers))]
    with ThreadPoolExecutor(workers) as pool:
        _measure(speedup, benchmark, pool, "threads", workers, claims)
