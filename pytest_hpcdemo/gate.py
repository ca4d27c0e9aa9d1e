"""The performance gate: saved histories, a significance test, and regression verdicts.

A history file is pytest-benchmark's own JSON (``--benchmark-autosave``/``--benchmark-save``/
``--benchmark-json``). Two quantities of each benchmark are gated:

* **time**: the benchmark's raw per-round seconds (``stats.data``, which our plugin keeps in saved
  runs); absolute, so compared only between runs of the same machine;
* **speedup**: for every timing claim, the per-round ratio baseline / candidate from
  ``extra_info["claims"][name]``; a ratio, so it travels across machines of the same hardware shape.

A change fails the gate only when it is both larger than a minimum effect (relative change of the
median, default 5%) *and* significant: a two-sided Mann-Whitney U test on the raw samples (exact for
small untied samples, normal approximation with tie correction otherwise) at level ``alpha``
(default 0.01). Rounds of one session are not independent of the session (the load of a shared
machine shifts them together), so the test alone would flag unchanged reruns; where the history has
at least three earlier runs of a series, the minimum effect is raised to the largest drift of their
medians: a change must exceed what unchanged sessions have shown.

Slower times and lower speedups are regressions; improvements fail only when both directions are
gated (a "faster" result can mean a stale baseline). Runs from different hardware
(usable cores, GIL state, GPUs, MPI world size) are refused; runs from a different machine of the
same shape gate their ratios only, and say so.

No pytest imports here: the ``compare`` command uses this module without running a suite.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_MIN_EFFECT = 0.05
DEFAULT_ALPHA = 0.01
# Exact null distribution of U up to this many samples a side (and no ties); normal beyond.
EXACT_MAX = 30
RUN_GLOB = "[0-9][0-9][0-9][0-9]_*.json"
# Earlier runs whose medians give a series' drift between sessions, and how many it takes.
HISTORY_WINDOW, HISTORY_MIN_RUNS = 10, 3
# Cores' worth of CPU other processes may take during a benchmark before its times say more about
# them than about the code: such a run is not compared (``extra_info["foreign_load"]``).
DEFAULT_BUSY_LOAD = 0.5


class HistoryError(Exception):
    """A history file or storage that cannot be read: the message is one line naming the file."""


# ---------------------------------------------------------------------------------------------
# Statistics


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return math.nan
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2.0


def _ranks(pooled: Sequence[float]) -> tuple[list[float], list[int]]:
    """Average ranks (1-based) of ``pooled`` and the sizes of its groups of ties."""
    order = sorted(range(len(pooled)), key=pooled.__getitem__)
    ranks = [0.0] * len(pooled)
    ties: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and pooled[order[j + 1]] == pooled[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        if j > i:
            ties.append(j - i + 1)
        i = j + 1
    return ranks, ties


@cache
def _u_counts(n: int, m: int) -> tuple[int, ...]:
    """How many of the C(n+m, n) orderings give each value of U (0..n*m), for untied samples."""
    # counts[j][u] for the current number i of x-samples and j of y-samples; U counts (x, y) pairs
    # with x > y, so adding the largest element as an x adds j to U, as a y adds nothing.
    row = [[1] for _ in range(m + 1)]  # i = 0: U is 0 whatever j
    for i in range(1, n + 1):
        new = [[1]]  # j = 0
        for j in range(1, m + 1):
            with_x = [0] * j + row[j]  # previous i, same j, shifted by j
            without = new[j - 1]
            size = i * j + 1
            new.append([(with_x[u] if u < len(with_x) else 0) + (without[u] if u < len(without) else 0)
                        for u in range(size)])
        row = new
    return tuple(row[m])


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that ``x`` and ``y`` come from one distribution."""
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        return 1.0
    ranks, ties = _ranks([*x, *y])
    u = sum(ranks[:n]) - n * (n + 1) / 2.0
    mean = n * m / 2.0
    if not ties and n <= EXACT_MAX and m <= EXACT_MAX:
        counts = _u_counts(n, m)
        extreme = min(u, n * m - u)  # the distribution is symmetric about n*m/2
        tail = sum(counts[: int(extreme) + 1])
        return min(1.0, 2.0 * tail / math.comb(n + m, n))
    total = n + m
    variance = n * m / 12.0 * ((total + 1) - sum(t**3 - t for t in ties) / (total * (total - 1)))
    if variance <= 0:
        return 1.0  # every sample equal
    z = max(0.0, abs(u - mean) - 0.5) / math.sqrt(variance)
    return math.erfc(z / math.sqrt(2.0))


# ---------------------------------------------------------------------------------------------
# Thresholds and verdicts


@dataclass(frozen=True)
class Thresholds:
    """When a change fails the gate: larger than ``min_effect`` (relative change of the median) and
    significant at ``alpha``; improvements too when ``both`` directions are gated."""

    min_effect: float = DEFAULT_MIN_EFFECT
    alpha: float = DEFAULT_ALPHA
    both: bool = False
    busy_load: float = DEFAULT_BUSY_LOAD

    def __post_init__(self) -> None:
        if not 0 <= self.min_effect < 10:
            raise ValueError(f"min_effect must be a fraction in [0, 10), got {self.min_effect!r}")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {self.alpha!r}")
        if not self.busy_load >= 0:
            raise ValueError(f"busy_load must be cores >= 0, got {self.busy_load!r}")

    def overridden(self, changes: Mapping[str, Any] | None) -> Thresholds:
        """These thresholds with a test's own (``@pytest.mark.gate(...)``, saved in ``extra_info``)."""
        if not changes:
            return self
        known = {k: changes[k] for k in THRESHOLD_KEYS if k in changes}
        return replace(self, **known)

    def __str__(self) -> str:
        sides = "either way" if self.both else "worse only"
        return f"min effect {self.min_effect:.0%}, alpha {self.alpha:g}, {sides}"


THRESHOLD_KEYS = ("min_effect", "alpha", "both", "busy_load")


class Outcome(StrEnum):
    UNCHANGED = "unchanged"  # no change both larger than the minimum effect and significant
    REGRESSED = "regressed"
    IMPROVED = "improved"
    NEW = "new"  # no baseline for it
    NOT_COMPARED = "not compared"


@dataclass(frozen=True)
class Series:
    """One gated quantity of one benchmark in one run: raw samples, and which way is better."""

    key: str
    kind: str  # "time" (lower is better) or "speedup" (higher is better)
    samples: tuple[float, ...]
    thresholds: Mapping[str, Any] | None = None
    load: float | None = None  # cores' worth of CPU other processes took during the benchmark
    busy: str = ""  # why other processes' load makes this run's samples incomparable, if it does

    def busy_reason(self, busy_load: float) -> str:
        if self.busy or self.load is None or self.load <= busy_load:
            return self.busy
        return f"foreign load {self.load:.2f} cores > {busy_load:g}"

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "time"

    @property
    def median(self) -> float:
        return median(self.samples)


@dataclass(frozen=True)
class Change:
    series: Series
    baseline: Series | None
    thresholds: Thresholds
    outcome: Outcome
    change: float = math.nan  # current median / baseline median - 1
    p_value: float = math.nan
    note: str = ""
    drift: float = 0.0  # the drift between earlier sessions' medians, when it raised the bar

    def _drift(self) -> str:
        raised = self.drift > self.thresholds.min_effect
        return f", raised to the history's drift {self.drift:.0%}" if raised else ""

    @property
    def failed(self) -> bool:
        improved = self.outcome is Outcome.IMPROVED and self.thresholds.both
        return self.outcome is Outcome.REGRESSED or improved

    def line(self) -> str:
        s = self.series
        what = "median time" if s.kind == "time" else "median speedup"
        if self.baseline is None or math.isnan(self.change):
            return f"{self.outcome.value.upper():<13} {s.key}: {self.note}"
        return (f"{self.outcome.value.upper():<13} {s.key}: {what} {_fmt(self.baseline.median, s.kind)} -> "
                f"{_fmt(s.median, s.kind)} ({self.change:+.1%}, p={self.p_value:.2g}, "
                f"{len(self.baseline.samples)} vs {len(s.samples)} rounds; {self.thresholds}{self._drift()})"
                + (f"; {self.note}" if self.note else ""))


def _fmt(value: float, kind: str) -> str:
    if kind != "time":
        return f"{value:.3g}x"
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6)):
        if value * scale >= 1:
            return f"{value * scale:.4g} {unit}"
    return f"{value * 1e9:.4g} ns"


def drift(history: Sequence[Run], key: str, busy_load: float = DEFAULT_BUSY_LOAD) -> float:
    """Largest relative deviation of an earlier run's median from the median of those medians (0
    with fewer than HISTORY_MIN_RUNS runs): how far unchanged sessions wander on this machine.
    Runs taken on a busy machine are left out, as the gate leaves them out."""
    medians = [s.median for run in history[-HISTORY_WINDOW:]
               if (s := run.series.get(key)) is not None and s.samples and not s.busy_reason(busy_load)]
    centre = median(medians)
    if len(medians) < HISTORY_MIN_RUNS or not centre > 0:
        return 0.0
    return max(abs(m / centre - 1.0) for m in medians)


def judge(baseline: Series | None, current: Series, thresholds: Thresholds, drift: float = 0.0) -> Change:
    """The verdict on one series: a change both larger than the bar (the minimum effect, or the
    history's drift when larger) and significant, or unchanged."""
    if baseline is None or not baseline.samples:
        return Change(current, None, thresholds, Outcome.NEW, note="no baseline to compare with")
    if not current.samples:
        return Change(current, baseline, thresholds, Outcome.NOT_COMPARED, note="no samples in this run")
    for which, s in (("this run", current), ("the baseline", baseline)):
        if reason := s.busy_reason(thresholds.busy_load):
            return Change(current, baseline, thresholds, Outcome.NOT_COMPARED,
                          note=f"machine busy in {which}: {reason}")
    before, after = baseline.median, current.median
    if not before > 0 or math.isnan(after):
        return Change(current, baseline, thresholds, Outcome.NOT_COMPARED, note="baseline median is 0")
    change = after / before - 1.0
    p = mann_whitney_p(baseline.samples, current.samples)
    outcome = Outcome.UNCHANGED
    if p < thresholds.alpha and abs(change) > max(thresholds.min_effect, drift):
        worse = change < 0 if current.higher_is_better else change > 0
        outcome = Outcome.REGRESSED if worse else Outcome.IMPROVED
    return Change(current, baseline, thresholds, outcome, change, p, drift=drift)


# ---------------------------------------------------------------------------------------------
# Runs and history files


@dataclass(frozen=True)
class Run:
    """One saved (or the current) run: its gated series and the machine it ran on."""

    label: str
    machine_info: Mapping[str, Any]
    series: dict[str, Series]
    benchmarks: tuple[Mapping[str, Any], ...] = ()

    @property
    def hardware(self) -> Mapping[str, Any]:
        info = self.machine_info.get("hpcdemo")
        return info if isinstance(info, Mapping) else {}


def _floats(values: Any) -> tuple[float, ...]:
    if not isinstance(values, list):
        return ()
    return tuple(float(v) for v in values if isinstance(v, int | float) and math.isfinite(v))


def series_of(bench: Mapping[str, Any]) -> list[Series]:
    """The gated series of one benchmark entry of pytest-benchmark's JSON."""
    name = bench["fullname"]
    extra = bench.get("extra_info") or {}
    gate = extra.get("gate") if isinstance(extra.get("gate"), Mapping) else None
    load = extra.get("foreign_load")
    load = float(load) if isinstance(load, int | float) else None
    found = [Series(name, "time", _floats((bench.get("stats") or {}).get("data")), gate, load)]
    claims = extra.get("claims")
    for claim, figures in (claims.items() if isinstance(claims, Mapping) else ()):
        base, cand = _floats(figures.get("baseline_s")), _floats(figures.get("candidate_s"))
        ratios = tuple(b / c for b, c in zip(base, cand, strict=False) if c > 0)
        rounds, contested = figures.get("rounds", 0), figures.get("contested_rounds", 0)
        # The measurement drops rounds in which others took the cores it needs; when they were
        # the majority its figures come from loaded rounds.
        busy = f"other processes took the cores in {contested} of {rounds} rounds" \
            if rounds and contested * 2 >= rounds else ""
        if ratios:
            found.append(Series(f"{name} [{claim}]", "speedup", ratios, gate, busy=busy))
    return found


def run_from_json(data: Any, label: str) -> Run:
    """A run from pytest-benchmark's JSON; ValueError/KeyError/TypeError when it is not one."""
    if not isinstance(data, Mapping) or not isinstance(data.get("benchmarks"), list):
        raise ValueError("not a pytest-benchmark run (no 'benchmarks' list)")
    series: dict[str, Series] = {}
    for bench in data["benchmarks"]:
        for s in series_of(bench):
            series[s.key] = s
    machine = data.get("machine_info") or {}
    return Run(label, machine, series, tuple(data["benchmarks"]))


def load_run(path: Path) -> Run:
    """Read one history file; a HistoryError with a one-line message naming it when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return run_from_json(data, path.stem)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read history file: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HistoryError(f"{path}: corrupt history file: {reason}") from None


def storage_path(storage: str) -> Path:
    """The folder of a ``--benchmark-storage`` value; only file storage holds files we can gate on."""
    if "://" in storage:
        scheme, _, rest = storage.partition("://")
        if scheme != "file":
            raise HistoryError(f"{storage}: the gate reads file storage only, not {scheme}://")
        storage = rest
    return Path(storage)


def machine_id() -> str:
    """The sub-folder pytest-benchmark saves this interpreter's runs in (its ``get_machine_id``)."""
    return (f"{platform.system()}-{platform.python_implementation()}-"
            f"{'.'.join(platform.python_version_tuple()[:2])}-{platform.architecture()[0]}")


def saved_runs(storage: Path, machine: str | None = None) -> list[Path]:
    """Saved runs of one machine folder (all folders when ``machine`` is None), oldest first."""
    folders = [storage / machine] if machine else sorted(p for p in storage.glob("*") if p.is_dir())
    return sorted((f for d in folders for f in d.glob(RUN_GLOB)), key=lambda f: (f.name, str(f.parent)))


def resolve_runs(specs: Sequence[str], storage: Path, machine: str | None) -> list[Path]:
    """Files named by ``specs``: paths, run numbers or name prefixes ("0003", "0003_abc"), or globs."""
    if not specs:
        return saved_runs(storage, machine)
    found: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found.append(path)
            continue
        matches = [f for f in saved_runs(storage, machine) if f.name.startswith(spec) or f.match(spec)]
        if not matches:
            raise HistoryError(f"{spec}: no such history file, and no saved run in {storage} matches it")
        found.extend(matches)
    return found


# ---------------------------------------------------------------------------------------------
# Comparing two runs


def _hardware_shape(hw: Mapping[str, Any]) -> dict[str, Any]:
    mpi = hw.get("mpi") if isinstance(hw.get("mpi"), Mapping) else {}
    gpu = hw.get("gpu") if isinstance(hw.get("gpu"), Mapping) else {}
    return {
        "usable cores": hw.get("usable_cores"),
        "GIL enabled": hw.get("gil_enabled"),
        "GPUs": list(gpu.get("devices") or []),
        "MPI world size": mpi.get("world_size", 1),
    }


def hardware_differences(baseline: Run, current: Run) -> list[str]:
    """What differs in the hardware a claim's thresholds derive from; such runs are not compared."""
    if not baseline.hardware or not current.hardware:
        return [] if baseline.hardware == current.hardware else ["one run has no hpcdemo hardware record"]
    a, b = _hardware_shape(baseline.hardware), _hardware_shape(current.hardware)
    return [f"{k} {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]


def _machine_of(info: Mapping[str, Any]) -> dict[str, Any]:
    cpu = info.get("cpu") if isinstance(info.get("cpu"), Mapping) else {}
    return {"node": info.get("node"), "cpu": cpu.get("brand_raw"), "python": info.get("python_version")}


def machine_differences(baseline: Run, current: Run) -> list[str]:
    """What differs in the machine itself: absolute times do not travel across those, ratios do."""
    a, b = _machine_of(baseline.machine_info), _machine_of(current.machine_info)
    return [f"{k} {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k]]


@dataclass
class GateReport:
    baseline: Run
    current: Run
    defaults: Thresholds
    changes: list[Change] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # hardware differences: nothing compared
    flagged: list[str] = field(default_factory=list)  # machine differences: times not compared

    @property
    def failures(self) -> list[Change]:
        return [c for c in self.changes if c.failed]

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    def lines(self, verbose: bool = False) -> list[str]:
        head = f"baseline {self.baseline.label} vs {self.current.label}; default {self.defaults}"
        if self.refused:
            return [head, "REFUSED: the runs come from different hardware ("
                    + "; ".join(self.refused) + "): nothing compared; record a new baseline on this hardware"]
        out = [head]
        if self.flagged:
            out.append("FLAGGED: different machine (" + "; ".join(self.flagged)
                       + "): absolute times not compared, speedups gated")
        shown = self.changes if verbose else [c for c in self.changes if c.outcome is not Outcome.UNCHANGED]
        out += [c.line() for c in shown]
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.outcome.value] = counts.get(c.outcome.value, 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to compare"
        out.append(f"gate: {'FAILED' if self.failed else 'passed'}: {summary}")
        return out


def compare(baseline: Run, current: Run, defaults: Thresholds = Thresholds(),
            history: Sequence[Run] = ()) -> GateReport:
    """Gate ``current`` against ``baseline``: every series of the current run gets a verdict.

    ``history``: earlier runs of the same hardware, oldest first (the baseline among them), whose
    drift raises the bar of each series; runs from other hardware in it are left out.
    """
    report = GateReport(baseline, current, defaults)
    report.refused = hardware_differences(baseline, current)
    if report.refused:
        return report
    report.flagged = machine_differences(baseline, current)
    history = [r for r in history if not hardware_differences(r, current)]
    for key, series in current.series.items():
        thresholds = defaults.overridden(series.thresholds)
        if series.kind == "time" and report.flagged:
            report.changes.append(Change(series, baseline.series.get(key), thresholds, Outcome.NOT_COMPARED,
                                         note="absolute time from a different machine"))
            continue
        if series.kind == "time" and not series.samples:
            continue  # nothing timed (e.g. --benchmark-disable): the claim's ratios still gate
        same_machine = [r for r in history if not machine_differences(r, current)] if series.kind == "time" \
            else history
        wander = drift(same_machine, key, thresholds.busy_load)
        report.changes.append(judge(baseline.series.get(key), series, thresholds, wander))
    return report


def history_table(runs: Iterable[Run]) -> list[str]:
    """Each series' median over the runs, oldest first: times and speedups."""
    runs = list(runs)
    keys: dict[str, str] = {}
    for run in runs:
        for key, s in run.series.items():
            if s.samples:
                keys.setdefault(key, s.kind)
    out = ["runs: " + ", ".join(f"[{i}] {r.label}" for i, r in enumerate(runs))]
    for key, kind in keys.items():
        cells = []
        for i, run in enumerate(runs):
            s = run.series.get(key)
            cells.append(f"[{i}] {_fmt(s.median, kind)}" if s and s.samples else f"[{i}] -")
        out.append(f"{key}: " + "  ".join(cells))
    return out
