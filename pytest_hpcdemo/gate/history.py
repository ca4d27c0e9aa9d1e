"""The performance gate: saved histories, a significance test, and regression verdicts.

A history file is pytest-benchmark's own JSON (``--benchmark-autosave``/``--benchmark-save``/
``--benchmark-json``). Two kinds of quantity of each benchmark are gated:

* **time**: the benchmark's raw per-round seconds (``stats.data``, which our plugin keeps in saved
  runs), lower is better; absolute, so compared only between runs of the same machine;
* **claims**: for every claim of a timing measurement (``extra_info["claims"][name]["claims"]``,
  e.g. ``speedup >= 1.35`` or ``parallelism <= 1.2``), the claim's own metric round by round, gated
  the claim's way round: higher is better for ``at_least`` (``>=``), lower for ``at_most`` (``<=``).
  Ratios travel across machines of the same hardware shape;
* **memory**: for every claim, each side's (baseline and candidate) growth of the process tree's
  peak resident memory over what it held when the call began, call by call (node/memory.py), lower is
  better. It fails as a time does (significant over the family, larger than the minimum effect)
  and only when it moved by more than :func:`memory_floor` (an allocator arena, or the baseline
  run's own call-to-call range when wider); other processes' CPU load does not make it "busy".

A change fails the gate only when it is both larger than a minimum effect (relative change of the
median, default 5%) *and* significant: a two-sided Mann-Whitney U test on the raw samples, every
series of the run judged together as one family (Benjamini-Hochberg, stats.py) so that an
unchanged run raises a false alarm with probability alpha at most (default 0.01), however many
series it has. Rounds of one session are not independent of the session (the load of a shared
machine shifts them together), so where the history has at least three earlier runs of a series
the minimum effect is raised to the largest drift of their medians. Each line says the smallest
change it could have detected. Comparing two revisions in interleaved sessions (``continuous``)
cancels that drift instead.

Times taken while other processes took more than ``busy_load`` cores are not compared, unless the
benchmark itself used next to no CPU (a sleep or an I/O wait does not compete for cores).
Improvements fail only when both directions are gated (a "faster" result can mean a stale
baseline). Runs from different hardware (usable cores, GIL state, GPUs, MPI world size) are
refused, and so are runs whose parallel stack differs in a field that changes results (CPU model,
cores, SMT, NUMA, BLAS threads, Numba's threading layer, MPI library or transport, Python:
node/fingerprint.py) unless forced, when the report says so; runs from a different machine of the same
shape gate their ratios and memory only, and say so.

No pytest imports here: the ``compare`` command uses this module without running a suite.
"""

from __future__ import annotations

import fnmatch
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeGuard

from ..core import figures as saved
from ..core.measure import median, mostly_contested
from .options import BOUNDS, DEFAULT_ALPHA, DEFAULT_BUSY_LOAD, DEFAULT_MIN_EFFECT
from .stats import adjusted, detectable_two_sample, mann_whitney_p

RUN_GLOB = "[0-9][0-9][0-9][0-9]_*.json"
# Earlier runs whose medians give a series' drift between sessions, and how many it takes.
HISTORY_WINDOW, HISTORY_MIN_RUNS = 10, 3
# A benchmark using less CPU than this (cores' worth, ``extra_info["own_cpu"]``) mostly waits: the
# cores others take are not the ones it needs, so its times are compared whatever the load.
IDLE_CPU = 0.1
TIMINGS = "raw timings (stats.data)"
MISSING_TIMINGS = f"no {TIMINGS} saved"
# A claim's memory, per side: each call's growth of the process tree's peak resident memory over what
# the tree held when the call began (node/memory.py), lower is better.
MEMORY = "rss_growth"
MEMORY_SIDES = ("baseline", "candidate")
# A memory change smaller than this is never a regression, however significant: CPython's
# allocator takes memory from the system in arenas of 1 MiB (3.10+), so an allocation pattern that
# did not change can still hold one arena more or less from one session to the next.
ARENA_BYTES = 2**20
METRIC_WORDS = {"time": "median time", "speedup": "median speedup", "cpu_speedup": "median CPU speedup",
                "parallelism": "median parallelism", MEMORY: "median peak RSS growth"}


class HistoryError(Exception):
    """A history file or storage that cannot be read: the message is one line naming the file."""


# ---------------------------------------------------------------------------------------------
# Thresholds and verdicts


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Thresholds:
    """When a change fails the gate: larger than ``min_effect`` (relative change of the median) and
    significant at ``alpha`` over the run's family of series; improvements too when ``both``
    directions are gated; not compared when others took more than ``busy_load`` cores."""

    min_effect: float = DEFAULT_MIN_EFFECT
    alpha: float = DEFAULT_ALPHA
    both: bool = False
    busy_load: float = DEFAULT_BUSY_LOAD

    def __post_init__(self) -> None:
        for name, (valid, bounds) in BOUNDS.items():  # the options' bounds (gate/options.py)
            value = getattr(self, name)
            if not _is_number(value) or not valid(value):
                raise ValueError(f"{name} must be {bounds}, got {value!r}")
        if not isinstance(self.both, bool):
            raise ValueError(f"both must be True or False, got {self.both!r}")

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
    kind: str  # "time", or the claim's metric: "speedup", "cpu_speedup", "parallelism"
    samples: tuple[float, ...]
    thresholds: Mapping[str, Any] | None = None
    load: float | None = None  # cores' worth of CPU other processes took during the benchmark
    busy: str = ""  # why other processes' load makes this run's samples incomparable, if it does
    higher_is_better: bool = False  # times: lower; a claim: its operator's way (>= higher)
    own_cpu: float | None = None  # cores' worth of CPU the benchmark itself used
    problem: str = ""  # why the saved samples cannot be used (missing, NaN, negative)

    def busy_reason(self, busy_load: float) -> str:
        if self.busy or self.load is None or self.load <= busy_load:
            return self.busy
        if self.own_cpu is not None and self.own_cpu < IDLE_CPU:
            return ""  # it waits (sleep, I/O): others' CPU use does not slow it
        return f"foreign load {self.load:.2f} cores > {busy_load:g}"

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
    p_value: float = math.nan  # the series' own test
    note: str = ""
    drift: float = 0.0  # the drift between earlier sessions' medians, when it raised the bar
    q_value: float = math.nan  # p adjusted over the run's family of compared series
    family: int = 1  # compared series judged together
    floor_bytes: float = 0.0  # memory: the least change in bytes that can fail (memory_floor)

    def _drift(self) -> str:
        raised = self.drift > self.thresholds.min_effect
        text = f", raised to the history's drift {self.drift:.0%}" if raised else ""
        if self.series.kind == MEMORY:
            text += f", and at least {self.floor_bytes / 2**20:.1f} MiB (memory_floor)"
        return text

    @property
    def compared(self) -> bool:
        return not math.isnan(self.p_value)

    @property
    def failed(self) -> bool:
        improved = self.outcome is Outcome.IMPROVED and self.thresholds.both
        return self.outcome is Outcome.REGRESSED or improved

    def decided(self, q_value: float, family: int) -> Change:
        """The verdict with the family's adjusted p-value: significant when ``q_value < alpha``."""
        t = self.thresholds
        outcome = Outcome.UNCHANGED
        bar = max(t.min_effect, self.drift)
        moved = self.baseline is None or self.series.kind != MEMORY or \
            abs(self.series.median - self.baseline.median) > self.floor_bytes
        if q_value < t.alpha and abs(self.change) > bar and moved:
            worse = self.change < 0 if self.series.higher_is_better else self.change > 0
            outcome = Outcome.REGRESSED if worse else Outcome.IMPROVED
        return replace(self, outcome=outcome, q_value=q_value, family=family)

    @property
    def detectable(self) -> float:
        """About the smallest change this series could have shown: the bar, or the noise's limit."""
        if self.baseline is None or not self.compared:
            return math.nan
        t = self.thresholds
        seen = detectable_two_sample(self.baseline.samples, self.series.samples, t.alpha, self.family)
        return max(t.min_effect, self.drift, seen)

    def line(self) -> str:
        s = self.series
        what = METRIC_WORDS.get(s.kind, f"median {s.kind}")
        if self.baseline is None or not self.compared:
            return f"{self.outcome.value.upper():<13} {s.key}: {self.note}"
        family = f", q={self.q_value:.2g} over {self.family} series" if self.family > 1 else ""
        return (f"{self.outcome.value.upper():<13} {s.key}: {what} {_fmt(self.baseline.median, s.kind)} -> "
                f"{_fmt(s.median, s.kind)} ({self.change:+.1%}, p={self.p_value:.2g}{family}, "
                f"detectable {self.detectable:.0%}, {len(self.baseline.samples)} vs {len(s.samples)} "
                f"{'calls' if s.kind == MEMORY else 'rounds'}; "
                f"{'higher' if s.higher_is_better else 'lower'} is better; {self.thresholds}{self._drift()})"
                + (f"; {self.note}" if self.note else ""))


def _fmt(value: float, kind: str) -> str:
    if kind == MEMORY:
        return f"{value / 2**20:.1f} MiB"
    if kind != "time":
        return f"{value:.3g}x" if kind != "parallelism" else f"{value:.3g}"
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6)):
        if value * scale >= 1:
            return f"{value * scale:.4g} {unit}"
    return f"{value * 1e9:.4g} ns"


def drift(history: Sequence[Run], key: str, busy_load: float = DEFAULT_BUSY_LOAD) -> float:
    """Largest relative deviation of an earlier run's median from the median of those medians (0
    with fewer than HISTORY_MIN_RUNS runs): how far unchanged sessions wander on this machine.
    Runs taken on a busy machine are left out, as the gate leaves them out."""
    medians = [s.median for run in history[-HISTORY_WINDOW:]
               if (s := run.series.get(key)) is not None and s.samples and not s.problem
               and not s.busy_reason(busy_load)]
    centre = median(medians)
    if len(medians) < HISTORY_MIN_RUNS or not centre > 0:
        return 0.0
    return max(abs(m / centre - 1.0) for m in medians)


def _not_compared(current: Series, baseline: Series, thresholds: Thresholds, note: str) -> Change:
    return Change(current, baseline, thresholds, Outcome.NOT_COMPARED, note=note)


def judge(baseline: Series | None, current: Series, thresholds: Thresholds, drift: float = 0.0,
          family: int = 1) -> Change:
    """The verdict on one series: a change both larger than the bar (the minimum effect, or the
    history's drift when larger) and significant, or unchanged. Alone (``family`` 1) its own
    p-value decides; ``compare`` re-decides every series with the family's adjusted p-values."""
    if baseline is None:
        return Change(current, None, thresholds, Outcome.NEW, note="no baseline to compare with")
    for which, s in (("this run", current), ("the baseline", baseline)):
        if s.problem:
            return _not_compared(current, baseline, thresholds, f"{which}: {s.problem}")
        if not s.samples:
            return _not_compared(current, baseline, thresholds, f"{which}: no samples")
    for which, s in (("this run", current), ("the baseline", baseline)):
        if reason := s.busy_reason(thresholds.busy_load):
            return _not_compared(current, baseline, thresholds, f"machine busy in {which}: {reason}")
    before, after = baseline.median, current.median
    floor = memory_floor(baseline.samples) if current.kind == MEMORY else 0.0
    if not before > 0 and current.kind == MEMORY:  # the call grew nothing before: any growth is new
        relative = 0.0 if after == before else math.inf
    elif not before > 0:
        return _not_compared(current, baseline, thresholds, "the baseline's median is 0")
    else:
        relative = after / before - 1.0
    p = mann_whitney_p(baseline.samples, current.samples)
    change = Change(current, baseline, thresholds, Outcome.UNCHANGED, relative, p, drift=drift,
                    floor_bytes=floor)
    return change.decided(p, family)


def memory_floor(baseline: Sequence[float]) -> float:
    """The least change of a claim's memory (bytes) that can fail the gate: one allocator arena
    (ARENA_BYTES), or the range of the baseline run's own calls when wider (the same code, the same
    session: a change inside it is what the calls do anyway)."""
    spread = max(baseline) - min(baseline) if baseline else 0.0
    return max(float(ARENA_BYTES), spread)


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
        info = self.machine_info.get(saved.HARDWARE)
        return info if isinstance(info, Mapping) else {}


def checked_samples(values: Any, what: str) -> tuple[tuple[float, ...], str]:
    """The samples of a saved list, or () and why they cannot be used."""
    if values is None:
        return (), f"no {what} saved"
    if not isinstance(values, list):
        return (), f"{what} is not a list"
    bad = sum(1 for v in values if not _is_number(v) or not math.isfinite(v) or v < 0)
    if bad:
        return (), f"{bad} of {len(values)} {what} are not numbers, NaN, infinite or negative"
    return tuple(float(v) for v in values), ""


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    return value


def claim_directions(figures: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metric, operator) of each claim of one measurement, from its saved decisions
    (``{"metric", "operator"}`` or ``{"claim": "speedup >= 1.35"}``); runs saved before claims
    were recorded gate their speedup, higher is better."""
    found: list[tuple[str, str]] = []
    decisions = figures.get("claims")
    for d in decisions if isinstance(decisions, list) else ():
        if not isinstance(d, Mapping):
            raise ValueError("a claim's decision is not an object")
        metric, op = d.get("metric"), d.get("operator", d.get("op"))
        if metric is None or op is None:
            metric, op, *_ = f"{d.get('claim', '')}  ".split(" ")
        if op not in (">=", "<=") or not metric:
            raise ValueError(f"claim {d.get('claim', d)!r} has no metric and operator")
        if (metric, op) not in found:
            found.append((metric, op))
    return found or [("speedup", ">=")]


def _claim_samples(figures: Mapping[str, Any], metric: str) -> tuple[tuple[float, ...], str]:
    """One metric of a claim round by round: ``per_round[metric]`` where saved, else (speedup) the
    ratio of the saved baseline and candidate seconds."""
    per_round = _mapping(figures.get("per_round"), "per_round")
    if metric in per_round:
        return checked_samples(per_round[metric], f"per-round {metric} values")
    if metric != "speedup":
        return (), f"no per-round {metric} saved (runs saved by an older plugin)"
    base, problem = checked_samples(figures.get("baseline_s"), "baseline seconds")
    cand, problem2 = checked_samples(figures.get("candidate_s"), "candidate seconds")
    if problem or problem2:
        return (), problem or problem2
    return tuple(b / c for b, c in zip(base, cand, strict=False) if c > 0), ""


def series_of(bench: Any, index: int = 0) -> list[Series]:
    """The gated series of one benchmark entry of pytest-benchmark's JSON; ValueError names a
    malformed entry."""
    if not isinstance(bench, Mapping) or not isinstance(bench.get("fullname"), str):
        raise ValueError(f"benchmark entry {index} has no 'fullname'")
    name = bench["fullname"]
    extra = _mapping(bench.get("extra_info"), f"{name}: extra_info")
    gate = _mapping(extra.get(saved.GATE), f"{name}: extra_info.gate") or None
    try:
        Thresholds().overridden(gate)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: gate thresholds: {exc}") from None
    load, own = extra.get(saved.FOREIGN_LOAD), extra.get(saved.OWN_CPU)
    load = float(load) if _is_number(load) else None
    own = float(own) if _is_number(own) else None
    data, problem = checked_samples(_mapping(bench.get("stats"), f"{name}: stats").get("data"), TIMINGS)
    found = [Series(name, "time", data, gate, load, own_cpu=own, problem=problem)]
    for claim, figures in _mapping(extra.get(saved.CLAIMS), f"{name}: extra_info.claims").items():
        figures = _mapping(figures, f"{name}: claim {claim}")
        rounds, contested = figures.get("rounds", 0), figures.get("contested_rounds", 0)
        # The measurement drops rounds in which others took the cores it needs; when they were
        # the majority its figures come from loaded rounds.
        busy = f"other processes took the cores in {contested} of {rounds} rounds" \
            if _is_number(rounds) and _is_number(contested) and mostly_contested(contested, rounds) else ""
        for metric, op in claim_directions(figures):
            samples, problem = _claim_samples(figures, metric)
            found.append(Series(f"{name} [{claim}] {metric} {op}", metric, samples, gate, busy=busy,
                                higher_is_better=op == ">=", problem=problem))
        memory = _mapping(figures.get("memory"), f"{name}: claim {claim} memory")
        found += memory_series(name, claim, memory, gate)
    return found


def memory_series(name: str, claim: str, memory: Mapping[str, Any],
                  gate: Mapping[str, Any] | None) -> list[Series]:
    """A claim's memory, one series per side (``<test> [<claim>] peak RSS growth (candidate)``):
    each call's growth of the peak over the resident memory when it began, lower is better. Other
    processes' CPU load does not change what a call allocates: never "busy". Runs saved before
    the growth was recorded have no memory series."""
    found = []
    for side in MEMORY_SIDES:
        if f"{side}_rss_growth_per_call" not in memory:
            continue
        samples, problem = checked_samples(memory[f"{side}_rss_growth_per_call"], f"{side} memory growths")
        key = f"{name} [{claim}] peak RSS growth ({side})"
        found.append(Series(key, MEMORY, samples, gate, problem=problem))
    return found


def run_from_json(data: Any, label: str) -> Run:
    """A run from pytest-benchmark's JSON; ValueError/KeyError/TypeError when it is not one."""
    if not isinstance(data, Mapping) or not isinstance(data.get("benchmarks"), list):
        raise ValueError("not a pytest-benchmark run (no 'benchmarks' list)")
    machine = _mapping(data.get("machine_info"), "machine_info")
    saved.schema_version(machine)  # every schema so far has the same keys; a newer one is refused
    series: dict[str, Series] = {}
    for i, bench in enumerate(data["benchmarks"]):
        for s in series_of(bench, i):
            series[s.key] = s
    return Run(label, machine, series, tuple(data["benchmarks"]))


def load_run(path: Path) -> Run:
    """Read one history file; a HistoryError with a one-line message naming it when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return run_from_json(data, path.stem)
    except OSError as exc:
        raise HistoryError(f"{path}: cannot read history file: {exc.strerror or exc}") from None
    except saved.SchemaError as exc:
        raise HistoryError(f"{path}: history file of another format: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HistoryError(f"{path}: corrupt history file: {reason}") from None


def load_history(files: Sequence[Path], keep: Path | None = None) -> tuple[list[Run], list[str]]:
    """Every readable run of ``files``, and a warning naming each unreadable one that is skipped.
    ``keep``, the chosen baseline, must be readable: its HistoryError is raised."""
    runs, warnings = [], []
    for f in files:
        try:
            runs.append(load_run(f))
        except HistoryError as exc:
            if keep is not None and f == keep:
                raise
            warnings.append(f"skipped {exc}")
    return runs, warnings


def storage_path(storage: str) -> Path:
    """The folder of a ``--benchmark-storage`` value; only file storage holds files we can gate on."""
    if "://" in storage:
        scheme, _, rest = storage.partition("://")
        if scheme != "file":
            raise HistoryError(f"{storage}: the gate reads file storage only, not {scheme}://")
        storage = rest
    return Path(storage)


def check_folder(path: Path, what: str, write: bool) -> None:
    """A HistoryError (one line) when ``path`` cannot be the folder ``what`` needs: it or a parent
    is a file, or (``write``) a file cannot be created in it. Creates it when writing."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise HistoryError(f"{what} {path}: {p} exists and is not a folder")
            break
    if not write:
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise HistoryError(f"{what} {path}: not writable: {exc.strerror or exc}") from None


def machine_id() -> str:
    """The sub-folder pytest-benchmark saves this interpreter's runs in (its ``get_machine_id``)."""
    from ..core.benchmark_compat import machine_id

    return machine_id()


def saved_runs(storage: Path, machine: str | None = None) -> list[Path]:
    """Saved runs of one machine folder (all folders when ``machine`` is None), oldest first."""
    folders = [storage / machine] if machine else sorted(p for p in storage.glob("*") if p.is_dir())
    return sorted((f for d in folders if d.is_dir() for f in d.glob(RUN_GLOB)),
                  key=lambda f: (f.name, str(f.parent)))


def _matches(spec: str, saved: Sequence[Path]) -> list[Path]:
    """Saved runs a spec names: a run number (``3``, ``0003``), a name prefix (``0003_ab``), or a glob."""
    if spec.isdigit():
        return [f for f in saved if f.name.partition("_")[0] == f"{int(spec):04}"]
    if any(c in spec for c in "*?["):
        return [f for f in saved if fnmatch.fnmatchcase(f.name, spec) or fnmatch.fnmatchcase(f.stem, spec)]
    return [f for f in saved if f.name.startswith(spec)]


def resolve_runs(specs: Sequence[str], storage: Path, machine: str | None) -> list[Path]:
    """Files named by ``specs``: paths, run numbers or name prefixes ("0003", "0003_abc"), or globs."""
    if not specs:
        return saved_runs(storage, machine)
    found: list[Path] = []
    for spec in specs:
        if not spec.strip():
            raise HistoryError("an empty run name: give a run number (0003), a name prefix or a file")
        path = Path(spec)
        if path.is_file():
            found.append(path)
            continue
        matches = _matches(spec, saved_runs(storage, machine))
        if not matches:
            raise HistoryError(f"{spec}: no such history file, and no saved run in {storage} matches it")
        found.extend(matches)
    return found


def resolve_one(spec: str, storage: Path, machine: str | None) -> Path:
    """The one file a baseline spec names; a HistoryError listing the matches when it names several."""
    matches = resolve_runs([spec], storage, machine)
    if len(matches) > 1:
        names = ", ".join(f.stem for f in matches[:8]) + (", ..." if len(matches) > 8 else "")
        raise HistoryError(f"baseline {spec!r} matches {len(matches)} saved runs ({names}): name exactly one")
    return matches[0]


def save_exclusive(folder: Path, name: str, text: str) -> Path:
    """Save a run as ``NNNN_<name>.json`` with the next free number, atomically and exclusively.

    The text goes to a temporary file in the same folder first (so a full disk leaves no partial
    run), then is hard-linked to the numbered name, which fails if another run took that number
    meanwhile; the number is then retried. Two runs saving at once never share a number."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".saving-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        while True:
            taken = [int(f.name[:4]) for f in folder.glob(RUN_GLOB)]
            target = folder / f"{max(taken, default=0) + 1:04}_{name}.json"
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                continue
    finally:
        os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# Comparing two runs


def _object(info: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = info.get(key)
    return value if isinstance(value, Mapping) else {}


def _hardware_shape(hw: Mapping[str, Any]) -> dict[str, Any]:
    mpi, gpu = _object(hw, "mpi"), _object(hw, "gpu")
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


def stack_differences(baseline: Run, current: Run) -> tuple[list[str], list[str]]:
    """(differences that change results, differences only noted) between the runs' fingerprints of
    the parallel stack (``machine_info["hpcdemo_fingerprint"]``, node/fingerprint.py says which field is
    which); nothing when either run has none (saved before it was recorded)."""
    from ..node.fingerprint import differences

    a = baseline.machine_info.get("hpcdemo_fingerprint")
    b = current.machine_info.get("hpcdemo_fingerprint")
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        return [], []
    return differences(a, b)


def _machine_of(info: Mapping[str, Any]) -> dict[str, Any]:
    cpu = _object(info, "cpu")
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
    stack: list[str] = field(default_factory=list)  # parallel-stack differences that change results
    forced: bool = False  # compared although ``stack`` differs
    noted: list[str] = field(default_factory=list)  # stack differences that may explain a change

    @property
    def failures(self) -> list[Change]:
        return [c for c in self.changes if c.failed]

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def not_compared(self) -> int:
        return sum(c.outcome is Outcome.NOT_COMPARED for c in self.changes)

    @property
    def mostly_not_compared(self) -> bool:
        """More than half of the series with a baseline were not compared: the gate says little."""
        with_baseline = [c for c in self.changes if c.outcome is not Outcome.NEW]
        return bool(with_baseline) and self.not_compared * 2 > len(with_baseline)

    def lines(self, verbose: bool = False) -> list[str]:
        head = f"baseline {self.baseline.label} vs {self.current.label}; default {self.defaults}"
        if self.refused:
            return [head, "REFUSED: the runs come from different hardware ("
                    + "; ".join(self.refused) + "): nothing compared; record a new baseline on this hardware"]
        if self.stack and not self.forced:
            return [head, "REFUSED: the runs differ in the parallel stack (" + "; ".join(self.stack)
                    + "): nothing compared; record a new baseline on this stack, or compare anyway with "
                    "--hpc-gate-force (pytest-hpcdemo compare --force)"]
        out = [head]
        if self.stack:
            out.append("FORCED: compared although the parallel stack differs (" + "; ".join(self.stack)
                       + "): a change may be the stack's, not the code's")
        if self.noted:
            out.append("NOTE: " + "; ".join(self.noted) + " (may explain a change; compared)")
        if self.flagged:
            out.append("FLAGGED: different machine (" + "; ".join(self.flagged)
                       + "): absolute times not compared, speedups gated")
        shown = self.changes if verbose else [c for c in self.changes if c.outcome is not Outcome.UNCHANGED]
        out += [c.line() for c in shown]
        out += closing_lines("gate", self.failed, [c.outcome for c in self.changes],
                             sum(c.compared for c in self.changes))
        return out


def closing_lines(what: str, failed: bool, outcomes: Sequence[Outcome], family: int) -> list[str]:
    """The summary of a gate or continuous run: every outcome counted, the family judged together,
    and a warning in capitals when most series with a baseline were not compared."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.value] = counts.get(o.value, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to compare"
    family_note = f"; {family} compared series judged together (Benjamini-Hochberg)" if family > 1 else ""
    out = [f"{what}: {'FAILED' if failed else 'passed'}: {summary}{family_note}"]
    with_baseline = sum(o is not Outcome.NEW for o in outcomes)
    skipped = counts.get(Outcome.NOT_COMPARED.value, 0)
    if with_baseline and skipped * 2 > with_baseline:
        out.append(f"WARNING: MOST SERIES WERE NOT COMPARED ({skipped} of {with_baseline}): this {what} "
                   "says little about them (see each NOT COMPARED line for why)")
    return out


def judged_together(changes: Sequence[Change]) -> list[Change]:
    """Every compared series re-decided with the family's adjusted p-values (Benjamini-Hochberg)."""
    compared = [i for i, c in enumerate(changes) if c.compared]
    q_values = adjusted([changes[i].p_value for i in compared])
    out = list(changes)
    for i, q in zip(compared, q_values, strict=True):
        out[i] = changes[i].decided(q, len(compared))
    return out


def compare(baseline: Run, current: Run, defaults: Thresholds = Thresholds(),
            history: Sequence[Run] = (), force: bool = False) -> GateReport:
    """Gate ``current`` against ``baseline``: every series of the current run gets a verdict, all
    judged together as one family.

    ``history``: earlier runs of the same hardware and stack, oldest first (the baseline among
    them), whose drift raises the bar of each series; runs from other hardware in it are left out.
    Runs whose parallel stack differs in a field that changes results are refused unless ``force``.
    """
    report = GateReport(baseline, current, defaults, forced=force)
    report.refused = hardware_differences(baseline, current)
    if report.refused:
        return report
    report.stack, report.noted = stack_differences(baseline, current)
    if report.stack and not force:
        return report
    report.flagged = machine_differences(baseline, current)
    other_python = _machine_of(baseline.machine_info)["python"] != _machine_of(current.machine_info)["python"]
    history = [r for r in history if not hardware_differences(r, current)
               and (force or not stack_differences(r, current)[0])]
    for key, series in current.series.items():
        thresholds = defaults.overridden(series.thresholds)
        if series.kind == "time" and report.flagged:
            report.changes.append(Change(series, baseline.series.get(key), thresholds, Outcome.NOT_COMPARED,
                                         note="absolute time from a different machine"))
            continue
        if series.kind == MEMORY and other_python:
            report.changes.append(Change(series, baseline.series.get(key), thresholds, Outcome.NOT_COMPARED,
                                         note="memory from another Python version (object sizes differ)"))
            continue
        if series.kind == "time" and not series.samples and series.problem in ("", MISSING_TIMINGS):
            continue  # nothing timed (e.g. --benchmark-disable): the claim's ratios still gate
        same_machine = [r for r in history if not machine_differences(r, current)] if series.kind == "time" \
            else history
        wander = drift(same_machine, key, thresholds.busy_load)
        report.changes.append(judge(baseline.series.get(key), series, thresholds, wander))
    report.changes = judged_together(report.changes)
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
            found = run.series.get(key)
            cells.append(f"[{i}] {_fmt(found.median, kind)}" if found and found.samples else f"[{i}] -")
        out.append(f"{key}: " + "  ".join(cells))
    return out
