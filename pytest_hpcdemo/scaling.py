"""The scaling study's arithmetic: which worker counts to measure, how much work each point gets,
efficiency and the Karp-Flatt serial fraction per point, and an Amdahl fit per backend.

Pure functions of injected facts (core counts, measured ratios), so that a 128-core node's study is
tested on a 2-core machine. SciPy is imported inside the fit only.

Each point measures **efficiency directly**: the baseline runs one worker's share serially, the
candidate runs every worker's share on N workers. For work that is linear in its size,
``t_serial(W / N) / t_parallel(W) = t_serial(W) / (N t_parallel(W))``, the efficiency. A round then
lasts about two shares whatever N is, where strong scaling against the whole serial run would last
N shares: on 128 cores a round of 13 s instead of 0.2 s.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hardware import Hardware

from .measure import SINGLE_CORE_CEILING, Claim, at_least, at_most, median_ci_rank, scaling_floor

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


@dataclass(frozen=True)
class PointWork:
    """The work of one point: ``share`` tasks of ``task_size`` per worker, in both sides."""

    workers: int
    task_size: int
    share: int  # tasks per worker; the baseline runs one share serially

    @property
    def tasks(self) -> int:
        """Tasks the candidate hands to its ``workers`` workers."""
        return self.workers * self.share


def work_per_point(workers: int, task_size: int, *, share: int = 2) -> PointWork:
    """Work for the point at ``workers``: each worker gets ``share`` tasks, so that a round's time
    (one share serially plus one share in parallel) does not grow with the worker count."""
    if workers < 1 or task_size < 1 or share < 1:
        raise ValueError(f"workers, task size and share must be at least 1; "
                         f"got {workers}, {task_size}, {share}")
    return PointWork(workers, task_size, share)


def study_seconds(usable_cores: int, backends: int, round_s: float, max_claim_s: float) -> float:
    """Upper bound of the study's measuring time: every point of every backend using its whole
    extended budget (``max_claim_s``), or at least the five rounds a verdict needs."""
    per_point = max(max_claim_s, 5 * round_s)
    return len(points(usable_cores)) * backends * per_point


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
    """Physical cores among the usable ones (``Hardware.physical_cores`` once it has it, else
    counted from /sys here)."""
    known = getattr(hardware, "physical_cores", None)
    if known:
        return int(known)
    from .fingerprint import usable_physical_cores

    return min(hardware.usable_cores, usable_physical_cores())


def claims_at(workers: int, physical: int, scales: bool = True) -> list[Claim]:
    """One worker uses one core (so does any number where the backend cannot scale); N workers of
    a backend that scales reach :func:`efficiency_floor`."""
    if workers == 1 or not scales:
        return [at_most("parallelism", SINGLE_CORE_CEILING)]
    return [at_least("speedup", efficiency_floor(workers, physical))]


def claims_for(hardware: Hardware, workers: int, scales: bool = True) -> list[Claim]:
    """:func:`claims_at` for this machine's physical cores."""
    return claims_at(workers, physical_cores(hardware), scales)


def record_point(extra_info: dict[str, Any], name: str, backend: str, workload: str, workers: int) -> None:
    """The point the report draws (``extra_info["scaling"]``), from the figures the measurement
    saved under ``name`` (also when it was skipped): the efficiency's median and interval over the
    clean rounds, and whether other processes took the cores in most rounds."""
    figures = extra_info.get("claims", {}).get(name)
    if not figures:
        return
    pairs = zip(figures["baseline_s"], figures["candidate_s"], strict=True)
    ratios = sorted(b / c for b, c in pairs if c > 0)
    if not ratios:
        return
    k = median_ci_rank(len(ratios), figures["confidence"])
    ci = (ratios[k - 1], ratios[-k]) if k else (ratios[0], ratios[-1])
    point = Point(workers, figures["speedup_median"], ci)
    extra_info["scaling"] = {"workload": workload, "backend": backend, **point.as_dict(),
                             "contested": figures["contested_rounds"] * 2 >= figures["rounds"]}


def measure_point(speedup: Any, extra_info: dict[str, Any], backend: str, workload: str, workers: int,
                  serial: Any, parallel: Any, claims: list[Claim]) -> None:
    """One point as its own interleaved claim through the ``speedup`` fixture (one share serially
    against ``workers`` shares on ``workers``), then its point recorded, whatever the verdict."""
    name = f"{backend} x{workers}: efficiency (one share serially vs {workers} shares on {workers})"
    try:
        speedup(serial, parallel, claims, cores_needed=workers, name=name)
    finally:
        record_point(extra_info, name, backend, workload, workers)
