"""Timing and statistics: interleaved rounds, paired ratios, confidence intervals and verdicts.

One place owns noise handling. A measurement runs a baseline and a candidate in alternating order
(A B, B A, A B, ...) so that slow drifts of the machine hit both alike, and for each round records
wall time, CPU time of the whole process tree (children included), and the foreign load: CPU that
other processes took from the machine meanwhile. A claim ("speedup >= 1.35", "parallelism <= 1.2")
gets a distribution-free confidence interval for the median of its per-round values and a verdict:

* holds: the whole interval is on the claimed side of the threshold;
* fails: the whole interval is on the other side;
* inconclusive: it straddles the threshold, or other processes took the cores the claim needs.

Inconclusive earns more rounds within a time budget; what is still inconclusive then is reported as
such (the plugin turns it into a skip that prints the figures), never as a pass or fail by luck.
No pytest imports here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# A run that is bound by one lock (the GIL) gets one core's worth of progress at most; the margin
# covers the resolution of CPU accounting and timer noise, not any machine's speed.
SINGLE_CORE_CEILING = 1.2
# Windows shorter than this give no usable foreign-load figure: /proc/stat counts in clock ticks
# (10 ms) summed over all cores, so a short window's load is mostly rounding.
MIN_LOAD_WINDOW_S = 0.2
# Where baseline and candidate do the same CPU work, their CPU times should agree. A round in which
# one side needed this much more CPU than the other ran on slowed cores: contention the guest
# cannot see (another VM on the host, an SMT sibling), which /proc/stat does not report as load.
SAME_WORK_CPU_TOLERANCE = 1.25
# Other processes' CPU (pool workers) comes from /proc in clock ticks: a side's figure can then be
# off by a few ticks (a read at each end, for each worker), which the tolerance allows for on short
# rounds. This process's own CPU is exact and gets no slack.
CPU_TICK_SLACK_S = 4 / CLOCK_TICKS
# Share of the ideal extra speedup per extra worker that a CPU-bound claim demands. Measured here:
# process pools reach 1.9-2.0 of 2 on an idle machine; the floor for 2 workers is 1.35.
SCALING_SHARE = 0.35


def scaling_floor(workers: int) -> float:
    """The least speedup that shows ``workers`` workers running CPU-bound work at the same time."""
    return 1.0 + SCALING_SHARE * (max(1, workers) - 1)


# ---------------------------------------------------------------------------------------------
# CPU accounting


def system_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine were busy since boot (steal included), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    values = [int(v) for v in fields[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / CLOCK_TICKS


def _descendant_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pid_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the children it has reaped (a forkserver reaps pool workers)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0  # exited meanwhile; its time reaches us through RUSAGE_CHILDREN once reaped
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


def descendants_cpu_seconds() -> float:
    """CPU time of this process's live descendants (pool workers), from /proc; 0 elsewhere."""
    if not os.path.isdir("/proc/self"):
        return 0.0
    return sum(_pid_cpu_seconds(pid) for pid in _descendant_pids(os.getpid()))


def reaped_children_cpu_seconds() -> float:
    """CPU time of the children this process has waited for (in clock ticks)."""
    times = os.times()
    return times.children_user + times.children_system


def tree_cpu_seconds() -> float:
    """CPU time of this process, its reaped children and its live descendants."""
    return time.process_time() + reaped_children_cpu_seconds() + descendants_cpu_seconds()


def foreign_load(busy_s: float | None, own_cpu_s: float, wall_s: float) -> float | None:
    """Cores' worth of CPU that other processes used in a window: the machine's busy seconds less
    ours, per second. None where /proc/stat is missing or the window is too short to tell."""
    if busy_s is None or wall_s < MIN_LOAD_WINDOW_S:
        return None
    return max(0.0, (busy_s - own_cpu_s) / wall_s)


@dataclass(frozen=True)
class Timing:
    """One timed call: wall seconds, CPU seconds of our process tree, and busy seconds of the machine."""

    wall: float
    cpu: float
    busy: float | None
    # CPU of other processes (pool workers, reaped children) counted in ``cpu``: read in clock ticks,
    # unlike this process's own, which is exact.
    ticked_cpu: float = 0.0

    @property
    def parallelism(self) -> float:
        """Effective parallelism: cores' worth of CPU our process tree used per second of wall time."""
        return self.cpu / self.wall if self.wall > 0 else 0.0


def timed(fn: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Run ``fn`` once and account for its wall time, CPU time and the machine's load.

    The /proc scan for descendants runs outside the window on both ends, so that its own few
    milliseconds of CPU count neither as our work nor as foreign load.
    """
    children0 = descendants_cpu_seconds()
    own0, reaped0, busy0 = time.process_time(), reaped_children_cpu_seconds(), system_busy_seconds()
    t0 = clock()
    fn()
    wall = clock() - t0
    busy1, reaped1, own1 = system_busy_seconds(), reaped_children_cpu_seconds(), time.process_time()
    children1 = descendants_cpu_seconds()
    busy = None if busy0 is None or busy1 is None else busy1 - busy0
    ticked = reaped1 - reaped0 + children1 - children0
    return Timing(wall, own1 - own0 + ticked, busy, ticked)


Run = Callable[[Callable[[], object]], Timing]  # how one call is timed


# ---------------------------------------------------------------------------------------------
# Claims and verdicts


class Verdict(StrEnum):
    HOLDS = "holds"
    FAILS = "fails"
    INCONCLUSIVE = "inconclusive"


METRICS = ("speedup", "cpu_speedup", "parallelism")


@dataclass(frozen=True)
class Claim:
    """A bound on a per-round metric: ``speedup`` (baseline wall / candidate wall), ``cpu_speedup``
    (the same with CPU time of the process tree, steadier where the work is serial), or the
    candidate's effective ``parallelism``."""

    metric: str
    op: str
    threshold: float

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; expected one of {METRICS}")
        if self.op not in (">=", "<="):
            raise ValueError(f"unknown comparison {self.op!r}; expected '>=' or '<='")

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:.3g}"


def at_least(metric: str, threshold: float) -> Claim:
    return Claim(metric, ">=", threshold)


def at_most(metric: str, threshold: float) -> Claim:
    return Claim(metric, "<=", threshold)


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values); ``statistics`` costs more to import than this is worth."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def median_ci_rank(n: int, confidence: float) -> int:
    """1-based rank k such that [x_(k), x_(n+1-k)] covers the median with at least ``confidence``.

    Distribution-free (binomial order statistics); 0 when n is too small for that confidence.
    """
    tail = (1.0 - confidence) / 2.0
    k, cumulative = 0, 0.0
    for j in range(n // 2 + 1):
        cumulative += math.comb(n, j) / 2.0**n
        if cumulative > tail:
            break
        k = j + 1
    return k


@dataclass(frozen=True)
class Decision:
    claim: Claim
    verdict: Verdict
    median: float
    low: float
    high: float

    def line(self) -> str:
        return f"{self.claim.metric} {self.median:.2f} [{self.low:.2f}, {self.high:.2f}] {self.claim.op} " \
               f"{self.claim.threshold:.3g}"

    def as_dict(self) -> dict[str, object]:
        return {"claim": str(self.claim), "verdict": self.verdict.value, "median": self.median,
                "ci_low": self.low, "ci_high": self.high}


def overall(decisions: Sequence[Decision]) -> Verdict:
    """One failing claim fails the lot; all must hold for it to hold; else inconclusive."""
    verdicts = {d.verdict for d in decisions}
    if Verdict.FAILS in verdicts:
        return Verdict.FAILS
    if verdicts == {Verdict.HOLDS}:
        return Verdict.HOLDS
    return Verdict.INCONCLUSIVE


def decide(values: Sequence[float], claim: Claim, confidence: float) -> Decision:
    """The verdict on one claim from per-round values; pure, so it is tested without timing."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return Decision(claim, Verdict.INCONCLUSIVE, math.nan, math.nan, math.nan)
    mid = median(ordered)
    k = median_ci_rank(n, confidence)
    if k == 0:
        return Decision(claim, Verdict.INCONCLUSIVE, mid, ordered[0], ordered[-1])
    low, high = ordered[k - 1], ordered[n - k]
    above, below = low >= claim.threshold, high < claim.threshold
    if claim.op == "<=":
        above, below = high <= claim.threshold, low > claim.threshold
    verdict = Verdict.HOLDS if above else Verdict.FAILS if below else Verdict.INCONCLUSIVE
    return Decision(claim, verdict, mid, low, high)


# ---------------------------------------------------------------------------------------------
# Interleaved measurement


@dataclass(frozen=True)
class Round:
    baseline: Timing
    candidate: Timing

    @property
    def speedup(self) -> float:
        return self.baseline.wall / self.candidate.wall if self.candidate.wall > 0 else math.inf

    @property
    def cpu_inflation(self) -> float:
        """Candidate CPU over baseline CPU: about 1 when both do the same work on equal cores."""
        return self.candidate.cpu / self.baseline.cpu if self.baseline.cpu > 0 else math.inf

    @property
    def cpu_speedup(self) -> float:
        return self.baseline.cpu / self.candidate.cpu if self.candidate.cpu > 0 else math.inf

    @property
    def parallelism(self) -> float:
        return self.candidate.parallelism

    @property
    def wall(self) -> float:
        return self.baseline.wall + self.candidate.wall

    @property
    def foreign_seconds(self) -> float | None:
        """CPU seconds other processes used during the round (None where /proc/stat is missing)."""
        if self.baseline.busy is None or self.candidate.busy is None:
            return None
        return self.baseline.busy + self.candidate.busy - self.baseline.cpu - self.candidate.cpu

    @property
    def foreign_load(self) -> float | None:
        """Cores' worth of CPU other processes took during the round; None for too short a round."""
        seconds = self.foreign_seconds
        return None if seconds is None else foreign_load(seconds, 0.0, self.wall)

    def value(self, metric: str) -> float:
        return float(getattr(self, metric))


@dataclass(frozen=True)
class Settings:
    """How long and how sure: from the command line (``--hpc-budget``, ``--hpc-confidence``)."""

    budget_s: float = 3.0
    confidence: float = 0.9
    min_rounds: int = 5
    max_rounds: int = 60
    extension: float = 3.0  # an inconclusive claim may use this many budgets in all


@dataclass
class Measurement:
    """Everything measured for one claim test, and its verdict."""

    name: str
    claims: tuple[Claim, ...]
    cores_needed: int
    usable_cores: int
    confidence: float
    same_work: bool = False
    rounds: list[Round] = field(default_factory=list)
    elapsed_s: float = 0.0

    def _too_loaded(self, load: float | None) -> bool:
        return load is not None and load > self.usable_cores - self.cores_needed + 0.5

    def slowed(self, r: Round) -> bool:
        """For same-work claims: one side needed far more CPU time than the other for the same
        work, so the cores were slower during it than during the other (hidden contention)."""
        if not self.same_work:
            return False
        least = min(r.baseline.cpu, r.candidate.cpu)
        if least <= 0:
            return False
        ticked = r.baseline.ticked_cpu > 0 or r.candidate.ticked_cpu > 0
        tolerance = SAME_WORK_CPU_TOLERANCE + (CPU_TICK_SLACK_S / least if ticked else 0.0)
        return not 1 / tolerance <= r.cpu_inflation <= tolerance

    def contested(self, r: Round) -> bool:
        """Other processes left fewer free cores than the claim needs during this round, or (for
        same-work claims) the cores ran slower on one side. Rounds too short to tell the load on
        their own are judged by the load over the whole measurement."""
        if self.slowed(r):
            return True
        if r.foreign_load is None and r.foreign_seconds is not None:
            return self._too_loaded(self.foreign_load)
        return self._too_loaded(r.foreign_load)

    @property
    def clean_rounds(self) -> list[Round]:
        return [r for r in self.rounds if not self.contested(r)]

    @property
    def decisions(self) -> list[Decision]:
        clean = self.clean_rounds
        return [decide([r.value(c.metric) for r in clean], c, self.confidence) for c in self.claims]

    @property
    def verdict(self) -> Verdict:
        return overall(self.decisions)

    @property
    def reason(self) -> str:
        if self.verdict is not Verdict.INCONCLUSIVE:
            return ""
        n_contested = len(self.rounds) - len(self.clean_rounds)
        n_slowed = sum(self.slowed(r) for r in self.rounds)
        if n_slowed * 2 >= len(self.rounds):
            return (f"the cores ran unevenly fast in {n_slowed} of {len(self.rounds)} rounds: the same work "
                    f"took {median([r.cpu_inflation for r in self.rounds]):.2f}x the CPU time in the "
                    f"candidate (contention this machine does not report as load)")
        if n_contested * 2 >= len(self.rounds):
            return (f"other processes took the cores this claim needs in {n_contested} of "
                    f"{len(self.rounds)} rounds (foreign load {self.foreign_load:.2f} cores, "
                    f"{self.cores_needed} of {self.usable_cores} needed)")
        contested = f", {n_contested} of {len(self.rounds)} rounds contested" if n_contested else ""
        return (f"too noisy to decide within {self.elapsed_s:.1f} s at {self.confidence:.0%} "
                f"confidence{contested}")

    @property
    def foreign_load(self) -> float:
        """Median over rounds long enough to tell; else the load over all rounds together."""
        per_round = [r.foreign_load for r in self.rounds if r.foreign_load is not None]
        if per_round:
            return median(per_round)
        seconds = [r.foreign_seconds for r in self.rounds if r.foreign_seconds is not None]
        wall = sum(r.wall for r in self.rounds if r.foreign_seconds is not None)
        load = foreign_load(sum(seconds), 0.0, wall) if seconds else None
        return math.nan if load is None else load

    def figures(self) -> dict[str, object]:
        """The figures saved in pytest-benchmark's ``extra_info``: plain JSON types only."""
        clean = self.clean_rounds or self.rounds
        base = [r.baseline.wall for r in clean]
        cand = [r.candidate.wall for r in clean]
        return {
            "claim": self.name,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "speedup_median": median([r.speedup for r in clean]),
            "speedup_best": min(base) / min(cand) if cand else math.nan,
            "parallelism_median": median([r.candidate.parallelism for r in clean]),
            "baseline_parallelism_median": median([r.baseline.parallelism for r in clean]),
            "cpu_inflation_median": median([r.cpu_inflation for r in self.rounds]),
            "same_work": self.same_work,
            "foreign_load_median": self.foreign_load,
            "rounds": len(self.rounds),
            "contested_rounds": len(self.rounds) - len(self.clean_rounds),
            "cores_needed": self.cores_needed,
            "usable_cores": self.usable_cores,
            "confidence": self.confidence,
            "elapsed_s": self.elapsed_s,
            "claims": [d.as_dict() for d in self.decisions],
            "baseline_s": base,
            "candidate_s": cand,
            "per_round": {metric: [r.value(metric) for r in clean] for metric in METRICS},  # gated
        }

    def line(self) -> str:
        """One line for a person: every claim's figure, interval and threshold, then the load.

        When every round was contested, the figures shown are those of all rounds (the verdict
        still ignores them)."""
        decisions = self.decisions
        if not self.clean_rounds and self.rounds:
            decisions = [decide([r.value(c.metric) for r in self.rounds], c, self.confidence)
                         for c in self.claims]
        parts = "; ".join(d.line() for d in decisions)
        load = self.foreign_load
        extra = f"; foreign load {load:.2f} cores" if not math.isnan(load) else ""
        return f"{parts}; {len(self.rounds)} rounds{extra}"


def _fastest(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.wall)


def measure(
    name: str,
    baseline: Callable[[], object],
    candidate: Callable[[], object],
    claims: Sequence[Claim],
    *,
    cores_needed: int,
    usable_cores: int,
    settings: Settings = Settings(),
    clock: Callable[[], float] = time.perf_counter,
    run: Run = timed,
    same_work: bool = False,
    repeats: int = 1,
) -> Measurement:
    """Measure ``baseline`` against ``candidate`` in interleaved rounds until every claim is decided.

    Rounds alternate the order (A B, then B A) so that a trend in the machine's speed cancels out.
    With ``repeats`` > 1 a round times A B A B ... that many times each and keeps each side's
    fastest call: for short serial work on a shared machine, where interference only ever adds
    time and comes in bursts, so that a few-percent claim is decided at all. ``same_work`` says
    both sides do the same CPU work (a parallel claim), so that a round in which one side needed
    far more CPU time is recognised as run on slowed cores (see SAME_WORK_CPU_TOLERANCE).
    After ``min_rounds``, measurement stops as soon as every claim is decided; while any is not, it
    goes on until ``budget_s * extension`` seconds have passed or ``max_rounds`` is reached.
    ``cores_needed`` is how many free cores the candidate needs to show the claim: 0 for waits
    that use no CPU (IO-bound work), whose rounds foreign load cannot contest.
    """
    if cores_needed < 0:
        raise ValueError(f"cores_needed must be 0 or more, got {cores_needed}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    m = Measurement(name, tuple(claims), cores_needed, usable_cores, settings.confidence, same_work)
    baseline(), candidate()  # warm-up: first-call costs (imports, pool start, caches) stay out
    start = clock()
    deadline = start + settings.budget_s * settings.extension
    while len(m.rounds) < settings.max_rounds:
        a_times: list[Timing] = []
        b_times: list[Timing] = []
        for _ in range(repeats):
            if len(m.rounds) % 2 == 0:
                a_times.append(run(baseline))
                b_times.append(run(candidate))
            else:
                b_times.append(run(candidate))
                a_times.append(run(baseline))
        m.rounds.append(Round(_fastest(a_times), _fastest(b_times)))
        m.elapsed_s = clock() - start
        if len(m.clean_rounds) >= settings.min_rounds and m.verdict is not Verdict.INCONCLUSIVE:
            break
        if len(m.rounds) >= settings.min_rounds and clock() >= deadline:
            break
    return m
