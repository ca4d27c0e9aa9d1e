"""Timing and statistics: interleaved rounds, paired ratios, confidence intervals and verdicts.

One place owns noise handling. A measurement runs a baseline and a candidate in alternating order
(A B, B A, A B, ...) so that slow drifts of the machine hit both alike, and for each round records
wall time, CPU time of the whole process tree (children included), and the foreign load: CPU that
other processes took from the machine meanwhile. A claim ("speedup >= 1.35", "parallelism <= 1.2")
gets a distribution-free confidence interval for the median of its per-round values and a verdict:

* holds: the whole interval is on the claimed side of the threshold;
* fails: the whole interval is on the other side;
* inconclusive: it straddles the threshold (noise), or other processes took the cores the claim
  needs (load), whichever way the claim leans.

Every round is a planned look of a confidence sequence (:func:`sequential_ranks`): the chance that
a claim whose true median sits on its threshold is ever declared "holds" (or "fails"), over all
looks, is at most (1 - confidence) / 2, and the bounds one measurement tests share that error
(Bonferroni), so stopping at the first decision is safe. tests/test_sequential.py proves it by
simulating the real loop (0.2 s calls, 10% log-normal noise, default settings): on its
threshold a claim held in 2.8% and failed in 3.5% of 2,000 claims (promised: at most 5% each),
and a true 15% effect was decided rightly in 94% (above) and 90% (below) within the default budget.
Inconclusive earns more rounds within a time budget; what is still inconclusive then is reported as
such (the plugin turns it into a skip that prints the figures), never as a pass or fail by luck.
No pytest imports here.
"""

from __future__ import annotations

import math
import os
import time
from bisect import insort
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, cached_property

from . import procfs

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# A run that is bound by one lock (the GIL) gets one core's worth of progress at most; the margin
# covers the resolution of CPU accounting and timer noise, not any machine's speed.
SINGLE_CORE_CEILING = 1.2
# Windows shorter than this give no usable foreign-load figure: /proc/stat counts in clock ticks
# (10 ms) summed over all cores, so a short window's load is mostly rounding.
MIN_LOAD_WINDOW_S = 0.2
# Share of the ideal extra speedup per extra worker that a CPU-bound claim demands. Measured here:
# process pools reach 1.9-2.0 of 2 on an idle machine; the floor for 2 workers is 1.35.
SCALING_SHARE = 0.35


def scaling_floor(workers: int) -> float:
    """The least speedup that shows ``workers`` workers running CPU-bound work at the same time."""
    return 1.0 + SCALING_SHARE * (max(1, workers) - 1)


def dominant_part_bound(factor: float) -> float:
    """The speedup at which a part of the baseline's time that *dominates* it (more than half)
    becomes ``factor`` times smaller in the candidate, the rest unchanged: with the part exactly
    half, ``1 / (1/2 + 1/(2 factor)) = 2 factor / (factor + 1)``; ``factor`` infinite gives 2.

    The one reading of "dominates" / "most of" that the chapters' cost claims share: a claim
    that a part (per-message cost, copied bytes) dominates and shrinks by ``factor`` holds above
    this bound; a claim that it does not dominate holds below it. It needs no machine figure:
    what the claim says fixes it."""
    return 2.0 if math.isinf(factor) else 2.0 * factor / (factor + 1.0)


# ---------------------------------------------------------------------------------------------
# CPU accounting


def system_busy_seconds() -> float | None:
    """CPU seconds all processes on the machine were busy since boot (steal included), from /proc/stat."""
    values = procfs.system_cpu_ticks()  # user nice system idle iowait irq softirq steal
    if values is None:
        return None
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / CLOCK_TICKS


def _descendant_pids(root: int) -> list[int]:
    children = procfs.children()
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _pid_cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the children it has reaped (a forkserver reaps pool workers)."""
    # 0 for one that exited meanwhile: its time reaches us through RUSAGE_CHILDREN once reaped
    return procfs.cpu_ticks(pid) / CLOCK_TICKS


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
    return Timing(wall, own1 - own0 + reaped1 - reaped0 + children1 - children0, busy)


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
    For one planned look at n values; :func:`sequential_ranks` for looks after every round.
    """
    tail = (1.0 - confidence) / 2.0
    k, cumulative = 0, 0.0
    for j in range(n // 2 + 1):
        cumulative += math.comb(n, j) / 2.0**n
        if cumulative > tail:
            break
        k = j + 1
    return k


# How a sequential plan spends its error over the looks: the share spent at round n (from
# min_rounds on) is proportional to (n - min_rounds + SPENDING_OFFSET) ** -SPENDING_POWER, so that
# most is spent by round 20 or so (where the default budget ends for 0.2 s calls) and some is left
# for slow claims that go on to max_rounds. Chosen for power by exact computation (README).
SPENDING_OFFSET = 6
SPENDING_POWER = 1.5


@cache
def sequential_ranks(confidence: float, family: int, min_rounds: int, max_rounds: int) -> tuple[int, ...]:
    """ranks[n] for n = 0 .. max_rounds: a confidence sequence for the median from order statistics.

    With k = ranks[n], the interval [x_(k), x_(n+1-k)] of the first n values may be looked at after
    every round up to ``max_rounds`` and stopped at any time (decided, out of time, or for any other
    reason): the chance that the true median is ever above an interval is at most
    (1 - confidence) / (2 * family), and the same below, so ``family`` claims tested on the same
    rounds are all covered with ``confidence`` (Bonferroni). It is exact whatever the distribution:
    for values whose median is m, the count above m after each round is a fair coin's random walk,
    and the upper boundary is placed look by look on the walk's exact distribution (paths that
    crossed are removed), spending no more error by round n than the plan allows; the lower one is
    its mirror image. k = 0 means no decision is possible yet (n below min_rounds or too small).
    """
    alpha = (1.0 - confidence) / (2.0 * family)
    weights = [0.0 if n < min_rounds else (n - min_rounds + SPENDING_OFFSET) ** -SPENDING_POWER
               for n in range(max_rounds + 1)]
    total = sum(weights) or 1.0
    ranks = [0] * (max_rounds + 1)
    alive = [1.0]  # alive[x]: P(x of the first n values above the median, boundary never crossed)
    allowed = spent = 0.0
    for n in range(1, max_rounds + 1):
        alive = [0.5 * ((alive[x] if x < n else 0.0) + (alive[x - 1] if x else 0.0)) for x in range(n + 1)]
        allowed += alpha * weights[n] / total
        need = n + 1  # "holds" once at least `need` of n values are above the threshold
        while need > 0 and spent + alive[need - 1] <= allowed:
            need -= 1
            spent += alive[need]
            alive[need] = 0.0
        ranks[n] = n + 1 - need
    return tuple(ranks)


def on_failing_side(claim: Claim, value: float) -> bool:
    """``value`` (a median) lies where the claim would fail: below a ``>=`` bound, above a ``<=``."""
    if math.isnan(value):
        return False
    return value < claim.threshold if claim.op == ">=" else value > claim.threshold


@dataclass(frozen=True)
class Decision:
    claim: Claim
    verdict: Verdict
    median: float
    low: float
    high: float
    rounds: int = 0  # values the verdict was reached on (all of them while undecided)
    interval: bool = True  # False: too few values for any interval; low and high are their range

    @property
    def drifted(self) -> bool:
        """The median of all values lies outside the interval: the interval intersects every look's,
        and the values moved after the early looks narrowed it (the machine's speed changed during
        the measurement). The verdict stands, as the plan counted it; the line says so."""
        return self.interval and not math.isnan(self.median) and not self.low <= self.median <= self.high

    def line(self) -> str:
        spread = f"[{self.low:.2f}, {self.high:.2f}]" if self.interval else \
            f"(range {self.low:.2f}-{self.high:.2f}: too few rounds for an interval)"
        drift = " (drifted: later rounds moved the median out of the interval)" if self.drifted else ""
        return (f"{self.claim.metric} {self.median:.2f} {spread} {self.claim.op} {self.claim.threshold:.3g}"
                f"{drift}")

    @property
    def leans_to_fail(self) -> bool:
        """Undecided with its median on the failing side of the bound (what --hpc-strict fails)."""
        return self.verdict is Verdict.INCONCLUSIVE and on_failing_side(self.claim, self.median)

    def more_rounds(self) -> int | None:
        """Roughly how many more rounds would likely decide an undecided claim: the interval's
        width shrinks about as 1/sqrt(n), so it clears the bound once n grows by
        (half-width / distance of the median from the bound) squared. None when the median sits
        on the bound (no amount of rounds is likely to decide) or the claim is decided."""
        if self.verdict is not Verdict.INCONCLUSIVE or self.rounds == 0 or math.isnan(self.median):
            return None
        distance = abs(self.median - self.claim.threshold)
        side = self.low if self.median >= self.claim.threshold else self.high
        half_width = abs(self.median - side)
        if distance <= 0 or half_width <= 0:
            return None
        return max(1, math.ceil(self.rounds * (half_width / distance) ** 2) - self.rounds)

    def as_dict(self) -> dict[str, object]:
        return {"claim": str(self.claim), "verdict": self.verdict.value, "median": self.median,
                "ci_low": self.low, "ci_high": self.high, "rounds": self.rounds, "interval": self.interval,
                "drifted": self.drifted}


def overall(decisions: Sequence[Decision]) -> Verdict:
    """One failing claim fails the lot; all must hold for it to hold; else inconclusive."""
    verdicts = {d.verdict for d in decisions}
    if Verdict.FAILS in verdicts:
        return Verdict.FAILS
    if verdicts == {Verdict.HOLDS}:
        return Verdict.HOLDS
    return Verdict.INCONCLUSIVE


def _side(claim: Claim, low: float, high: float) -> Verdict:
    """Where an interval lies against the claim's bound."""
    holds, fails = low >= claim.threshold, high < claim.threshold
    if claim.op == "<=":
        holds, fails = high <= claim.threshold, low > claim.threshold
    return Verdict.HOLDS if holds else Verdict.FAILS if fails else Verdict.INCONCLUSIVE


def decide(values: Sequence[float], claim: Claim, confidence: float, family: int = 1) -> Decision:
    """The verdict on one claim from a fixed number of values, looked at once (the MPI chapter's
    planned rounds); ``family`` claims on the same values share the error (Bonferroni). Pure."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return Decision(claim, Verdict.INCONCLUSIVE, math.nan, math.nan, math.nan)
    mid = median(ordered)
    k = median_ci_rank(n, 1.0 - (1.0 - confidence) / family)
    if k == 0:
        return Decision(claim, Verdict.INCONCLUSIVE, mid, ordered[0], ordered[-1], n, interval=False)
    low, high = ordered[k - 1], ordered[n - k]
    return Decision(claim, _side(claim, low, high), mid, low, high, n)


def decide_sequentially(values: Sequence[float], claim: Claim, ranks: Sequence[int]) -> Decision:
    """The verdict on one claim from values in the order they were measured, looked at after each
    (``ranks`` from :func:`sequential_ranks`). The verdict is the first look's whose interval is
    clear of the bound; the interval shown is the intersection of every look's (a confidence
    sequence may be intersected), the median that of all values. Pure."""
    n_all = min(len(values), len(ranks) - 1)
    if n_all == 0:
        return Decision(claim, Verdict.INCONCLUSIVE, math.nan, math.nan, math.nan)
    ordered: list[float] = []
    low, high = -math.inf, math.inf
    verdict, decided_at = Verdict.INCONCLUSIVE, n_all
    for n, value in enumerate(values[:n_all], start=1):
        insort(ordered, value)
        k = ranks[n]
        if k == 0:
            continue
        look_low, look_high = max(low, ordered[k - 1]), min(high, ordered[n - k])
        if look_low > look_high:  # the looks disagree (a rare swing): keep what they agreed on
            continue
        low, high = look_low, look_high
        if verdict is Verdict.INCONCLUSIVE:
            verdict = _side(claim, low, high)
            decided_at = n
    if math.isinf(low) or math.isinf(high):  # too few rounds for any interval: show their range
        return Decision(claim, verdict, median(ordered), ordered[0], ordered[-1], n_all, interval=False)
    return Decision(claim, verdict, median(ordered), low, high,
                    decided_at if verdict is not Verdict.INCONCLUSIVE else n_all)


def more_needed(decisions: Sequence[Decision], seconds_per_round: float, at_least: int = 0) -> str:
    """Roughly how much more measurement would likely decide the undecided claims; "" if none.
    ``at_least``: the rounds still missing before the plan's first decisive look."""
    more = [d.more_rounds() for d in decisions if d.verdict is Verdict.INCONCLUSIVE]
    if not more:
        return ""
    if None in more:
        return "its median sits on its bound: more rounds are unlikely to decide it"
    rounds = max(at_least, *(m for m in more if m is not None))
    plural = "s" if rounds > 1 else ""
    return f"about {rounds} more round{plural} (~{rounds * seconds_per_round:.0f} s) would likely decide it"


def too_loaded(load: float | None, usable_cores: int, cores_needed: int) -> bool:
    """Other processes left fewer free cores than a claim needs: the rule for contested rounds,
    the same for a claim that would hold and one that would fail (and for MPI's measurements)."""
    return load is not None and load > usable_cores - cores_needed + 0.5


def mostly_contested(contested: float, rounds: float) -> bool:
    """Other processes took the cores in at least half of a measurement's rounds: it stays
    undecided "by load", and its saved figures (the gate's, the scaling plot's) come from loaded
    rounds."""
    return rounds > 0 and contested * 2 >= rounds


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

    @cached_property
    def foreign_seconds(self) -> float | None:
        """CPU seconds other processes used during the round (None where /proc/stat is missing)."""
        if self.baseline.busy is None or self.candidate.busy is None:
            return None
        return self.baseline.busy + self.candidate.busy - self.baseline.cpu - self.candidate.cpu

    @cached_property
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
    min_rounds: int = Settings.min_rounds  # the sequential plan's first and last looks
    max_rounds: int = Settings.max_rounds
    # Same-work claims: the CPU inflation this session measured with every core busy on pure
    # compute (node.limits: processes over the pool ideal); NaN where none was measured.
    expected_inflation: float = math.nan

    def contested(self, r: Round) -> bool:
        """Other processes (foreign load, steal) left fewer free cores than the claim needs during
        this round. Rounds too short to tell the load on their own are judged by the load over the
        whole measurement. What the machine does not report (SMT siblings, a slower all-core clock,
        shared memory bandwidth) contests nothing: it is a property of the machine, shown as the
        CPU inflation of same-work claims."""
        if r.foreign_load is None and r.foreign_seconds is not None:
            return too_loaded(self.foreign_load, self.usable_cores, self.cores_needed)
        return too_loaded(r.foreign_load, self.usable_cores, self.cores_needed)

    @property
    def clean_rounds(self) -> list[Round]:
        return [r for r in self.rounds if not self.contested(r)]

    @property
    def ranks(self) -> tuple[int, ...]:
        return sequential_ranks(self.confidence, max(1, len(self.claims)), self.min_rounds,
                                max(self.max_rounds, self.min_rounds))

    @property
    def first_look(self) -> int:
        """The first round at which the plan can decide (7 for one claim at 90%, 8 for two)."""
        return next((n for n, k in enumerate(self.ranks) if k), len(self.ranks) - 1)

    def _decide(self, rounds: Sequence[Round]) -> list[Decision]:
        ranks = self.ranks
        return [decide_sequentially([r.value(c.metric) for r in rounds], c, ranks) for c in self.claims]

    @property
    def decisions(self) -> list[Decision]:
        return self._decide(self.clean_rounds)

    @property
    def verdict(self) -> Verdict:
        decisions = self.decisions
        verdict = overall(decisions)
        if verdict is Verdict.FAILS and self._inflation_explains(decisions):
            return Verdict.INCONCLUSIVE
        return verdict

    @property
    def unseen_contention(self) -> bool:
        """A failing same-work claim whose cores delivered less than this session measured them able
        to with every core busy (CPU inflation above :attr:`expected_inflation`), and which would not
        fail had they delivered that: contention the machine does not report (a shared host's
        other guests). Decided on the same rounds and plan, each round's figure scaled by its own
        inflation over the expected one. A shortfall the machine always shows (SMT siblings, a lower
        all-core clock) is in the expected inflation too, so it still fails."""
        return self._inflation_explains(self.decisions)

    def _inflation_explains(self, decisions: Sequence[Decision]) -> bool:
        """:attr:`unseen_contention` for the clean rounds' ``decisions`` (computed once by the caller)."""
        expected = self.expected_inflation
        failing = [d.claim for d in decisions if d.verdict is Verdict.FAILS]
        if not failing or not self.same_work or not expected > 0 or not self.cpu_inflation > expected:
            return False
        rounds = self.clean_rounds
        for claim in failing:
            if claim.metric != "speedup":
                return False
            delivered = [r.speedup * r.cpu_inflation / expected for r in rounds]
            if decide_sequentially(delivered, claim, self.ranks).verdict is Verdict.FAILS:
                return False
        return True

    @property
    def undecided_by(self) -> str:
        """Why a claim stayed inconclusive: "load" (other processes took the cores it needs in most
        rounds, or took them unseen: :attr:`unseen_contention`) or "noise" (the intervals still
        straddle the bound); "" once decided."""
        if self.verdict is not Verdict.INCONCLUSIVE:
            return ""
        n_contested = len(self.rounds) - len(self.clean_rounds)
        loaded = mostly_contested(n_contested, len(self.rounds)) or self.unseen_contention
        return "load" if loaded else "noise"

    @property
    def leans_to_fail(self) -> bool:
        """Undecided with some claim's median on the failing side of its bound."""
        return self.verdict is Verdict.INCONCLUSIVE and any(d.leans_to_fail for d in self.decisions)

    def more_needed(self) -> str:
        """Roughly how much more measurement would likely decide an undecided claim."""
        per_round = self.elapsed_s / len(self.rounds) if self.rounds else 0.0
        clean_share = len(self.clean_rounds) / len(self.rounds) if self.rounds else 1.0
        return more_needed(self.decisions, per_round / max(clean_share, 1e-9),
                           self.first_look - len(self.clean_rounds))

    @property
    def reason(self) -> str:
        if self.verdict is not Verdict.INCONCLUSIVE:
            return ""
        n_contested = len(self.rounds) - len(self.clean_rounds)
        if self.unseen_contention:
            return (f"the cores delivered less than this session measured them able to (CPU inflation "
                    f"{self.cpu_inflation:.2f}x against {self.expected_inflation:.2f}x with every core "
                    "busy at its start), and would not fail had they: contention the machine does not "
                    "report, as from a shared host's other guests")
        if self.undecided_by == "load":
            return (f"other processes took the cores this claim needs in {n_contested} of "
                    f"{len(self.rounds)} rounds ({self.cores_needed} of {self.usable_cores} needed; "
                    "the line gives the foreign load)")
        contested = f", {n_contested} of {len(self.rounds)} rounds contested" if n_contested else ""
        more = self.more_needed()
        return (f"too noisy to decide within {self.elapsed_s:.1f} s at {self.confidence:.0%} "
                f"confidence{contested}" + (f"; {more}" if more else ""))

    @property
    def cpu_inflation(self) -> float:
        """Median candidate CPU over baseline CPU for the same work: 1 where the cores deliver the
        same work in parallel as in serial; above 1 where SMT siblings, a lower all-core clock or
        shared memory bandwidth slow them. NaN unless ``same_work``."""
        if not self.same_work:
            return math.nan
        return median([r.cpu_inflation for r in self.clean_rounds or self.rounds])

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
        decisions = self.decisions
        return {
            "claim": self.name,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "undecided_by": self.undecided_by,
            "leans_to_fail": self.leans_to_fail,
            "speedup_median": median([r.speedup for r in clean]),
            "speedup_best": min(base) / min(cand) if cand else math.nan,
            "parallelism_median": median([r.candidate.parallelism for r in clean]),
            "baseline_parallelism_median": median([r.baseline.parallelism for r in clean]),
            "cpu_inflation_median": median([r.cpu_inflation for r in self.rounds]),
            "cpu_inflation": self.cpu_inflation,
            "expected_inflation": self.expected_inflation,
            "same_work": self.same_work,
            "foreign_load_median": self.foreign_load,
            "rounds": len(self.rounds),
            "contested_rounds": len(self.rounds) - len(self.clean_rounds),
            "cores_needed": self.cores_needed,
            "usable_cores": self.usable_cores,
            "confidence": self.confidence,
            "family": len(self.claims),
            "elapsed_s": self.elapsed_s,
            "claims": [d.as_dict() for d in decisions],
            "baseline_s": base,
            "candidate_s": cand,
            "per_round": {metric: [r.value(metric) for r in clean] for metric in METRICS},  # gated
        }

    def line(self) -> str:
        """One line for a person: every claim's figure, interval and threshold, the CPU inflation of
        same-work claims, then the load.

        When every round was contested, the figures shown are those of all rounds (the verdict
        still ignores them)."""
        decisions = self.decisions
        if not self.clean_rounds and self.rounds:
            decisions = self._decide(self.rounds)
        parts = "; ".join(d.line() for d in decisions)
        inflation = self.cpu_inflation
        if not math.isnan(inflation):
            parts += f"; CPU inflation {inflation:.2f}x"
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
    expected_inflation: float = math.nan,
    progress: Callable[[Measurement], None] | None = None,
) -> Measurement:
    """Measure ``baseline`` against ``candidate`` in interleaved rounds until every claim is decided.

    Rounds alternate the order (A B, then B A) so that a trend in the machine's speed cancels out.
    With ``repeats`` > 1 a round times A B A B ... that many times each and keeps each side's
    fastest call: for short serial work on a shared machine, where interference only ever adds
    time and comes in bursts, so that a few-percent claim is decided at all. ``same_work`` says
    both sides do the same CPU work (a parallel claim): their CPU ratio is then reported as the
    CPU inflation, a property of the machine's cores, not a reason to drop rounds; with
    ``expected_inflation`` (what this session measured with every core busy), a failure that only
    inflation beyond it explains is undecided instead (:attr:`Measurement.unseen_contention`).
    Every round is a planned look of the confidence sequence (:func:`sequential_ranks`), so
    stopping as soon as every claim is decided costs no error; while any is not, measurement goes
    on until ``budget_s * extension`` seconds have passed (and the plan's first decisive look,
    :attr:`Measurement.first_look`, is reached in clean rounds, unless load contested most of
    them) or ``max_rounds`` is.
    ``cores_needed`` is how many free cores the candidate needs to show the claim: 0 for waits
    that use no CPU (IO-bound work), whose rounds foreign load cannot contest.
    ``progress`` is called with the measurement after each round (report/progress.py shows it).
    """
    if cores_needed < 0:
        raise ValueError(f"cores_needed must be 0 or more, got {cores_needed}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    m = Measurement(name, tuple(claims), cores_needed, usable_cores, settings.confidence, same_work,
                    min_rounds=settings.min_rounds, max_rounds=settings.max_rounds,
                    expected_inflation=expected_inflation)
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
        now = clock()
        m.elapsed_s = now - start
        if progress is not None:
            progress(m)
        if m.verdict is not Verdict.INCONCLUSIVE:  # no decision before min_rounds clean rounds
            break
        # Out of time, once the plan had a chance to decide (or load contested most rounds).
        if now >= deadline and len(m.rounds) >= m.first_look and \
                (len(m.clean_rounds) >= m.first_look or m.undecided_by == "load"):
            break
    return m
