"""The scaling study's arithmetic: which worker counts to measure, how much work each point gets,
efficiency and the Karp-Flatt serial fraction per point, and an Amdahl fit per backend.

Pure functions of injected facts (core counts, measured ratios), so that a 128-core node's study is
tested on a 2-core machine. SciPy is imported inside the fit only.

Small points are strong scaling: the baseline runs all N workers' shares serially, the candidate
the same shares on N workers, so both do the same CPU work (``same_work``): their CPU ratio is the
CPU inflation, shown on the line and set against the one this session measured with every core busy
(:func:`expected_inflation`), so that contention the machine does not report leaves a point
undecided rather than failed. Above ``STRONG_UP_TO``
workers a point measures **efficiency directly**: the baseline runs one worker's share serially.
For work linear in its size, ``t_serial(W / N) / t_parallel(W) = t_serial(W) / (N t_parallel(W))``,
the efficiency, and a round lasts about two shares whatever N is, where strong scaling would last
N shares: on 128 cores a round of 0.2 s instead of 13 s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..core.hardware import Hardware
    from .limits import Limits

from ..core.measure import (
    SINGLE_CORE_CEILING,
    Claim,
    at_least,
    at_most,
    median_ci_rank,
    mostly_contested,
    scaling_floor,
)

SCIPY_MISSING = "scipy is not installed: pip install 'pytest-hpcdemo[report]'"


def points(usable_cores: int) -> list[int]:
    """Worker counts of the study: the powers of two below the usable cores, then the usable core
    count itself (1, 2, 4, ..., 64, 128 on 128 cores; 1, 2, 4, 6 on 6; 1 on 1)."""
    if usable_cores < 1:
        raise ValueError(f"usable cores must be at least 1, got {usable_cores}")
    found, n = [], 1
    while n < usable_cores:
        found.append(n)
        n *= 2
    return [*found, usable_cores]


STRONG_UP_TO = 4  # workers up to which a point is strong scaling (a round of at most 5 shares)
CHAPTER_WORKERS = STRONG_UP_TO


def chapter_workers(usable_cores: int) -> int:
    """Workers of a chapter's parallel claim (threads or processes against serial): at most
    ``CHAPTER_WORKERS``. Such a claim runs the same N tasks serially as its baseline, so a round
    lasts N tasks: at 128 cores, 128 tasks serially, minutes per claim. Its point (that the
    mechanism runs work in parallel at all) shows at 2 to 4 workers; how far each backend scales,
    up to every usable core, is the scaling study's (benchmarks/test_scaling.py), whose points are
    sized so that a round lasts about two shares at any N."""
    return max(1, min(usable_cores, CHAPTER_WORKERS))


@dataclass(frozen=True)
class PointWork:
    """The work of one point: ``share`` tasks of ``task_size`` per worker in the candidate, and
    ``baseline_shares`` such shares run serially in the baseline."""

    workers: int
    task_size: int
    share: int  # tasks per worker
    baseline_shares: int  # ``workers`` (strong scaling: the same work) or 1 (efficiency directly)

    @property
    def tasks(self) -> int:
        """Tasks the candidate hands to its ``workers`` workers."""
        return self.workers * self.share

    @property
    def same_work(self) -> bool:
        return self.baseline_shares == self.workers

    def efficiency(self, ratio: float) -> float:
        """Efficiency from the measured time ratio (baseline over candidate): the baseline takes
        ``baseline_shares`` shares' time, the candidate one share's time over the efficiency."""
        return ratio / self.baseline_shares

    def ratio(self, efficiency: float) -> float:
        """The time ratio that ``efficiency`` gives."""
        return efficiency * self.baseline_shares

    def describe(self) -> str:
        serial = f"{self.baseline_shares} share{'s' if self.baseline_shares > 1 else ''} serially"
        return f"{serial} vs {self.workers} on {self.workers} worker{'s' if self.workers > 1 else ''}"


def work_per_point(workers: int, task_size: int, *, share: int = 2,
                   strong_up_to: int = STRONG_UP_TO) -> PointWork:
    """Work for the point at ``workers``: each worker gets ``share`` tasks; the baseline runs them
    all serially up to ``strong_up_to`` workers, one worker's share above, so that a round's time
    stops growing with the worker count there."""
    if workers < 1 or task_size < 1 or share < 1:
        raise ValueError(f"workers, task size and share must be at least 1; "
                         f"got {workers}, {task_size}, {share}")
    return PointWork(workers, task_size, share, workers if workers <= strong_up_to else 1)


def round_shares(workers: int, strong_up_to: int = STRONG_UP_TO) -> int:
    """Shares of serial time one round takes at ``workers`` (baseline plus candidate, ideal)."""
    return work_per_point(workers, 1, share=1, strong_up_to=strong_up_to).baseline_shares + 1


def study_seconds(usable_cores: int, backends: int, share_s: float, max_claim_s: float) -> float:
    """Upper bound of the study's measuring time: every point of every backend using its whole
    extended budget (``max_claim_s``), or at least the five rounds a verdict needs."""
    return sum(backends * max(max_claim_s, 5 * round_shares(n) * share_s) for n in points(usable_cores))


def efficiency_floor(workers: int, physical_cores: int) -> float:
    """The least efficiency a CPU-bound claim accepts at ``workers`` workers: the scaling floor of
    the physical cores among them (an SMT sibling shares its core's units and guarantees no
    speedup), spread over all the workers."""
    return scaling_floor(min(workers, max(1, physical_cores))) / workers


def karp_flatt(speedup: float, workers: int) -> float:
    """The experimentally determined serial fraction ``(1/S - 1/N) / (1 - 1/N)`` (Karp and Flatt,
    1990); NaN for one worker, where it is undefined."""
    if workers <= 1 or not speedup > 0:
        return math.nan
    return (1 / speedup - 1 / workers) / (1 - 1 / workers)


@dataclass(frozen=True)
class Point:
    """One measured point: the efficiency's median and interval, and what follows from it."""

    workers: int
    efficiency: float
    efficiency_ci: tuple[float, float]

    @property
    def speedup(self) -> float:
        return self.efficiency * self.workers

    @property
    def speedup_ci(self) -> tuple[float, float]:
        return self.efficiency_ci[0] * self.workers, self.efficiency_ci[1] * self.workers

    @property
    def karp_flatt(self) -> float:
        return karp_flatt(self.speedup, self.workers)

    @property
    def karp_flatt_ci(self) -> tuple[float, float]:
        """Karp-Flatt falls as the speedup rises: the interval's ends swap."""
        low, high = self.speedup_ci
        return karp_flatt(high, self.workers), karp_flatt(low, self.workers)

    def as_dict(self) -> dict[str, object]:
        return {"workers": self.workers, "efficiency": self.efficiency,
                "efficiency_ci": list(self.efficiency_ci), "speedup": self.speedup,
                "ci": list(self.speedup_ci), "karp_flatt": self.karp_flatt,
                "karp_flatt_ci": list(self.karp_flatt_ci)}


def amdahl_speedup(serial_fraction: float, workers: float) -> float:
    return 1.0 / (serial_fraction + (1.0 - serial_fraction) / workers)


@dataclass(frozen=True)
class AmdahlFit:
    """Amdahl's serial fraction fitted to a backend's points, and the fits to its intervals' ends."""

    fraction: float
    low: float  # fitted to every point's upper speedup
    high: float  # fitted to every point's lower speedup
    points: int


def _fit(workers: Sequence[float], speedups: Sequence[float]) -> float:
    import numpy as np

    try:
        from scipy.optimize import OptimizeWarning, curve_fit
    except ImportError:
        raise RuntimeError(SCIPY_MISSING) from None

    def model(n: Any, f: float) -> Any:  # curve_fit's order: the variable first, then the parameter
        return 1.0 / (f + (1.0 - f) / n)

    with warnings.catch_warnings():  # the covariance, unused here, is undefined for one point
        warnings.simplefilter("ignore", OptimizeWarning)
        (fraction,), _ = curve_fit(model, np.asarray(workers, dtype=float),
                                   np.asarray(speedups, dtype=float), p0=[0.1], bounds=(0.0, 1.0))
    return float(fraction)


def amdahl_fit(points_: Sequence[tuple[int, float, float, float]]) -> AmdahlFit | None:
    """Least-squares fit of ``S(N) = 1 / (f + (1 - f) / N)`` (scipy.optimize.curve_fit, f in [0, 1])
    to (workers, speedup, lower, upper) points. One worker says nothing about f: None without a
    point above one worker. The interval is the fit to the lower and the upper ends of the points'
    intervals (NaN where a point has none). RuntimeError without SciPy."""
    used = [p for p in points_ if p[0] > 1 and p[1] > 0]
    if not used:
        return None
    workers = [float(p[0]) for p in used]
    fraction = _fit(workers, [p[1] for p in used])
    if any(not (p[2] > 0 and p[3] > 0) for p in used):
        return AmdahlFit(fraction, math.nan, math.nan, len(used))
    low, high = _fit(workers, [p[3] for p in used]), _fit(workers, [p[2] for p in used])
    return AmdahlFit(fraction, low, high, len(used))


def physical_cores(hardware: Hardware) -> int:
    """Physical cores among the usable ones (the usable count where topology was not detected)."""
    return min(hardware.usable_cores, hardware.physical_cores or hardware.usable_cores)


def claims_at(work: PointWork, physical: int, scales: bool = True) -> list[Claim]:
    """One worker uses one core (so does any number where the backend cannot scale); N workers of
    a backend that scales reach :func:`efficiency_floor`, as the time ratio this point measures."""
    if work.workers == 1 or not scales:
        return [at_most("parallelism", SINGLE_CORE_CEILING)]
    return [at_least("speedup", work.ratio(efficiency_floor(work.workers, physical)))]


def record_point(extra_info: dict[str, Any], name: str, backend: str, workload: str, work: PointWork) -> None:
    """The point the report draws (``extra_info["scaling"]``), from the figures the measurement
    saved under ``name`` (also when it was skipped): the efficiency's median and interval over the
    clean rounds, and whether other processes took the cores (in most rounds, or unseen: the claim
    was left undecided by load), which the plot draws hollow and leaves out of the fit."""
    from ..core import figures as saved

    figures = extra_info.get(saved.CLAIMS, {}).get(name)
    if not figures:
        return
    pairs = zip(figures["baseline_s"], figures["candidate_s"], strict=True)
    ratios = sorted(b / c for b, c in pairs if c > 0)
    if not ratios:
        return
    k = median_ci_rank(len(ratios), figures["confidence"])
    low, high = (ratios[k - 1], ratios[-k]) if k else (ratios[0], ratios[-1])
    point = Point(work.workers, work.efficiency(figures["speedup_median"]),
                  (work.efficiency(low), work.efficiency(high)))
    busy = figures.get("undecided_by") == "load" or \
        mostly_contested(figures["contested_rounds"], figures["rounds"])
    extra_info[saved.SCALING] = {"workload": workload, "backend": backend, **point.as_dict(),
                                 "contested": busy}


def of_the_pool_ideal(point: dict[str, Any], limits: Limits) -> str:
    """At the whole node (the workers the limits ran on): the point's speedup as a fraction of the
    process-pool ideal measured in this session, kept in the point (``fraction_of_pool_ideal``,
    with the ideal) and said in words; "" at smaller points, which no limit was measured for."""
    if point.get("workers") != limits.processes or not limits.pool_ideal > 0:
        return ""
    fraction = point["speedup"] / limits.pool_ideal
    point.update(fraction_of_pool_ideal=fraction, pool_ideal=limits.pool_ideal, limits_loaded=limits.loaded)
    loaded = f" (under {limits.foreign_load:.1f} cores of foreign load)" if limits.loaded else ""
    return (f"speedup {point['speedup']:.2f} = {fraction:.0%} of the process-pool ideal "
            f"{limits.pool_ideal:.2f}x measured this session{loaded}")


def expected_inflation(limits: Limits | None) -> float:
    """The CPU inflation this session measured with every core busy on pure compute (the limits'
    processes over their pool ideal): what the cores deliver together as a property of the machine
    (SMT siblings, a lower all-core clock); NaN without limits. A point that fails only because its
    cores delivered less than that is undecided (core.measure's ``unseen_contention``); fewer workers
    than the limits' processes inflate less, so the all-core figure only lets more failures stand."""
    if limits is None or not limits.pool_ideal > 0:
        return math.nan
    return limits.processes / limits.pool_ideal


def measure_point(speedup: Any, extra_info: dict[str, Any], backend: str, workload: str, work: PointWork,
                  one_share: Callable[[], object], parallel: Callable[[], object], physical: int,
                  scales: bool = True, limits: Limits | None = None,
                  note: Callable[[str], object] | None = None) -> None:
    """One point as its own interleaved claim through the ``speedup`` fixture (``baseline_shares``
    runs of ``one_share`` against ``parallel``), then its point recorded, whatever the verdict;
    at the whole node, with ``limits``, its fraction of the pool ideal too (on the ``note`` line).
    ``limits`` also give the CPU inflation a failing same-work point is set against."""
    name = f"{backend} x{work.workers}: {work.describe()}"

    def serial() -> None:
        for _ in range(work.baseline_shares):
            one_share()

    try:
        speedup(serial, parallel, claims_at(work, physical, scales), cores_needed=work.workers,
                same_work=work.same_work, expected_inflation=expected_inflation(limits), name=name)
    finally:
        record_point(extra_info, name, backend, workload, work)
        point = extra_info.get("scaling")
        said = of_the_pool_ideal(point, limits) if point and limits is not None else ""
        if said and note is not None:
            note(said)
