"""``pytest-hpcdemo continuous BASE [HEAD] [-- PYTEST-ARGS]``: two revisions compared in
interleaved sessions, the way asv's ``continuous`` works, but paired.

Both revisions are checked out as git worktrees in a temporary folder (HEAD omitted: the working
tree as it is, uncommitted changes included). The selected benchmarks of each run in alternating
sessions, A B, B A, A B, ..., each session its own ``python -m pytest`` process whose working
directory and ``PYTHONPATH`` are the revision's worktree, so that the revision's own code is
imported and not an installed copy. A session's figure of a benchmark is its median round, timed
by default in the session's own CPU time (``--timer cpu``: time.process_time): on a machine shared
with other builds, a round's wall time counts the time others held the core (here, with load 20
on 2 cores, wall medians of a 1 ms kernel ranged from 8 to 48 ms between sessions; CPU medians from
1.8 to 2.2 ms). ``--timer wall`` measures what CPU time misses (sleeps, I/O, child processes,
waiting threads) and takes the fastest round, the one that had a core. A claim's figure is the
median of the claim's metric (its rounds are interleaved already). Each pair of sessions gives one
ratio head / base. On
a shared machine the medians of unchanged code drift between sessions by more than the changes to
catch (17% measured here), but the two sessions of a pair run seconds apart and the order
alternates, so drift cancels in the ratio. The change of a series is the geometric mean of its
ratios, with a t-interval; all series are judged together (Benjamini-Hochberg over the paired
t-tests' p-values, stats.py), and a series fails when its change is significant and larger
than the minimum effect, the claim's own way round (times: lower is better; ``at_least``: higher).
A claim's memory (each side's median peak RSS growth, history.py) is paired the same way, lower is
better, and fails only when it also moved by more than an allocator arena (1 MiB).

Exit status: 0 no regression, 1 a regression, 2 a bad argument (or a session that could not run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.measure import median
from ..core.options import number, positive_seconds
from ..report.options import add_report_option
from . import history
from .history import Outcome, closing_lines
from .options import CONTINUOUS_MIN_EFFECT, DEFAULT_ALPHA, add_threshold_options
from .stats import Paired, adjusted, paired

DEFAULT_PAIRS = 10
DEFAULT_MIN_EFFECT = CONTINUOUS_MIN_EFFECT
DEFAULT_SESSION_TIMEOUT = 600.0
# Short sessions: many pairs of a few rounds beat few pairs of many (pairs are what cancel drift).
SESSION_ARGS = ("-p", "no:cacheprovider", "-p", "no:xdist", "-q", "--benchmark-only",
                "--benchmark-max-time=0.2", "--benchmark-min-rounds=5")
# --timer: pytest-benchmark's timer of a session, and the statistic of its rounds taken.
TIMERS = {"cpu": ("time.process_time", "median"), "wall": ("time.perf_counter", "min")}


class ContinuousError(Exception):
    """A bad argument or a session that could not run: one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# A session's figures and the paired comparison (pure: tested on synthetic sessions)


@dataclass(frozen=True)
class Figure:
    """One benchmark's or claim's figure in one session, and which way is better."""

    value: float
    kind: str  # "time" or the claim's metric
    higher_is_better: bool


def session_figures(data: Any, statistic: str = "median") -> dict[str, Figure]:
    """Each benchmark's ``statistic`` of its rounds (``median`` or ``min``) and each claim's median
    metric in one session's JSON (pytest-benchmark's ``--benchmark-json``); ValueError names a
    malformed file."""
    run = history.run_from_json(data, "session")
    figures: dict[str, Figure] = {}
    for bench in run.benchmarks:
        stats = bench.get("stats")
        value = stats.get(statistic) if isinstance(stats, Mapping) else None
        if history._is_number(value) and math.isfinite(value) and value > 0:
            figures[bench["fullname"]] = Figure(float(value), "time", False)
    for key, s in run.series.items():
        if s.kind != "time" and s.samples and s.median > 0:
            figures[key] = Figure(s.median, s.kind, s.higher_is_better)
    return figures


@dataclass(frozen=True)
class PairedChange:
    key: str
    kind: str
    higher_is_better: bool
    base: float  # median over the base sessions
    head: float
    test: Paired
    outcome: Outcome
    q_value: float = math.nan
    family: int = 1
    detectable: float = math.nan
    note: str = ""

    def failed(self, both: bool) -> bool:
        """A regression fails; an improvement too when ``both`` directions are gated."""
        return self.outcome is Outcome.REGRESSED or (both and self.outcome is Outcome.IMPROVED)

    def line(self) -> str:
        head = f"{self.outcome.value.upper():<13} {self.key}:"
        if self.note:
            return f"{head} {self.note}"
        t = self.test
        way = "higher" if self.higher_is_better else "lower"
        what = "time" if self.kind == "time" else history.METRIC_WORDS.get(self.kind, f"median {self.kind}")
        base, now = history._fmt(self.base, self.kind), history._fmt(self.head, self.kind)
        return (f"{head} {what} base {base}, head {now}, "
                f"change {t.change:+.1%} [{t.low:+.1%}, {t.high:+.1%}] ({t.pairs} pairs, p={t.p_value:.2g}, "
                f"q={self.q_value:.2g} over {self.family} series; detectable {self.detectable:.0%}; "
                f"{way} is better)")


SessionPair = tuple[Mapping[str, "Figure"], Mapping[str, "Figure"]]


def compare_sessions(pairs: Sequence[SessionPair], min_effect: float = DEFAULT_MIN_EFFECT,
                     alpha: float = DEFAULT_ALPHA) -> list[PairedChange]:
    """Every series of the (base, head) session pairs judged, all together as one family."""
    keys = list(dict.fromkeys(k for b, h in pairs for k in (*b, *h)))
    judged: list[PairedChange] = []
    for key in keys:
        both = [(b[key], h[key]) for b, h in pairs if key in b and key in h]
        known = next(f for b, h in pairs for f in (b.get(key), h.get(key)) if f is not None)
        base_values = [b[key].value for b, _ in pairs if key in b]
        head_values = [h[key].value for _, h in pairs if key in h]
        test = paired([math.log(h.value / b.value) for b, h in both], alpha)
        change = PairedChange(key, known.kind, known.higher_is_better, median(base_values),
                              median(head_values), test, Outcome.UNCHANGED)
        if not head_values:
            change = _note(change, Outcome.NOT_COMPARED, "not in head's sessions (removed or skipped)")
        elif not base_values:
            change = _note(change, Outcome.NEW, "not in base's sessions: nothing to compare with")
        elif len(both) < 2:
            change = _note(change, Outcome.NOT_COMPARED, f"in both sessions of {len(both)} pair only")
        judged.append(change)
    compared = [i for i, c in enumerate(judged) if not c.note]
    for i, q in zip(compared, adjusted([judged[i].test.p_value for i in compared]), strict=True):
        c = judged[i]
        outcome = Outcome.UNCHANGED
        # Memory: a change of no more than an allocator arena is never a regression (history.ARENA_BYTES).
        moved = c.kind != history.MEMORY or abs(c.head - c.base) > history.ARENA_BYTES
        if q < alpha and abs(c.test.change) > min_effect and moved:
            worse = c.test.change < 0 if c.higher_is_better else c.test.change > 0
            outcome = Outcome.REGRESSED if worse else Outcome.IMPROVED
        judged[i] = PairedChange(c.key, c.kind, c.higher_is_better, c.base, c.head, c.test, outcome, q,
                                 len(compared), c.test.detectable(alpha, len(compared), min_effect))
    return judged


def _note(c: PairedChange, outcome: Outcome, note: str) -> PairedChange:
    return PairedChange(c.key, c.kind, c.higher_is_better, c.base, c.head, c.test, outcome, note=note)


def session_order(pairs: int) -> list[tuple[int, str]]:
    """(pair, "base" or "head") in running order: A B, B A, A B, ... so that a trend over the run
    falls on both revisions alike."""
    order = []
    for i in range(pairs):
        first, second = ("base", "head") if i % 2 == 0 else ("head", "base")
        order += [(i, first), (i, second)]
    return order


# ---------------------------------------------------------------------------------------------
# Worktrees and sessions


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        message = (result.stderr.strip().splitlines() or ["failed"])[-1]
        raise ContinuousError(f"git {' '.join(args)}: {message}")
    return result.stdout.strip()


def revision(repo: Path, spec: str) -> str:
    """The commit a revision names; a ContinuousError when it names none."""
    if not spec.strip() or spec.startswith("-"):
        raise ContinuousError(f"{spec!r}: not a revision")
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except ContinuousError:
        raise ContinuousError(f"{spec}: no such revision in {repo} (in CI, check out with the full "
                              "history: fetch-depth 0)") from None


@contextmanager
def worktrees(repo: Path, commits: Mapping[str, str | None]) -> Iterator[dict[str, Path]]:
    """Each named commit checked out (detached) in a temporary folder; None: the working tree
    itself. Removed afterwards, whatever happens."""
    folder = Path(tempfile.mkdtemp(prefix="hpcdemo-continuous-"))
    added: list[Path] = []
    try:
        paths = {}
        for name, commit in commits.items():
            if commit is None:
                paths[name] = repo
                continue
            path = folder / name
            _git(repo, "worktree", "add", "--detach", "--quiet", str(path), commit)
            added.append(path)
            paths[name] = path
        yield paths
    finally:
        for path in added:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)],
                           capture_output=True, timeout=120)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def session_env(root: Path) -> dict[str, str]:
    """The environment of a session in a worktree: its root (and ``src/``) first on the path."""
    env = dict(os.environ)
    paths = [str(root / "src")] if (root / "src").is_dir() else []
    paths.append(str(root))
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a user's run writes bytecode
    return env


def run_session(cwd: Path, root: Path, pytest_args: Sequence[str], out: Path, log: Path,
                timeout: float, timer: str = "cpu") -> dict[str, Any]:
    """One pytest session in its own process (and process group, ended whatever happens); its
    JSON, or a ContinuousError saying why there is none."""
    cmd = [sys.executable, "-m", "pytest", *SESSION_ARGS, f"--benchmark-timer={TIMERS[timer][0]}",
           f"--benchmark-json={out}", *pytest_args]
    if not cwd.is_dir():
        raise ContinuousError(f"{cwd.relative_to(root)}: no such folder in this revision (run from the "
                              "repository's root, or a folder both revisions have)")
    with log.open("w") as output:
        proc = subprocess.Popen(cmd, cwd=cwd, env=session_env(root), stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ContinuousError(f"a session in {cwd} ran past {timeout:g} s (--session-timeout); "
                                  f"its output: {log}") from None
        finally:
            _end(proc)
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    if code not in (0, 1):
        raise ContinuousError(f"a session in {cwd} exited {code}: {tail}")
    try:
        return json.loads(out.read_text())
    except (OSError, ValueError):
        raise ContinuousError(f"a session in {cwd} saved no benchmark JSON: {tail}") from None


def _end(proc: subprocess.Popen[Any]) -> None:
    """The session's whole process group ended: SIGTERM, then SIGKILL after 5 s."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with suppress(ProcessLookupError, PermissionError):  # already gone
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# ---------------------------------------------------------------------------------------------
# The command


def add_parser(commands: Any) -> None:
    c = commands.add_parser(
        "continuous", help="compare two revisions in interleaved sessions (A B B A ...)",
        description="Run the benchmarks of BASE and HEAD (default: the working tree) in alternating "
                    "sessions and compare them pair by pair. Arguments after -- go to pytest.")
    c.add_argument("base", metavar="BASE", help="the revision to compare with, e.g. origin/main")
    c.add_argument("head", metavar="HEAD", nargs="?", default=None,
                   help="the revision under test (default: the working tree, uncommitted changes included)")
    c.add_argument("--pairs", type=_pairs, default=DEFAULT_PAIRS,
                   help=f"session pairs (default {DEFAULT_PAIRS}; at least 3)")
    add_threshold_options(c.add_argument, min_effect=DEFAULT_MIN_EFFECT, busy=False)  # as --hpc-gate-*
    c.add_argument("--timer", choices=sorted(TIMERS), default="cpu",
                   help="cpu (default): each round's CPU time of the session, its median; wall: wall "
                        "time, the fastest round (for code that waits: sleeps, I/O, child processes)")
    c.add_argument("--session-timeout", type=positive_seconds, default=DEFAULT_SESSION_TIMEOUT,
                   metavar="SECONDS", help="end a session running longer (default %(default)s)")
    add_report_option(c.add_argument,
                      "the last head session's report (as for a run) and continuous.txt, in DIR")


_pairs = number("a whole number", lambda v: 3 <= v <= 1000, "from 3 to 1000 pairs", parse=int)


def _say(line: str) -> None:
    print(line, flush=True)  # progress shows in a CI log as it happens


def run(args: argparse.Namespace, pytest_args: Sequence[str], say: Callable[[str], None] = _say) -> int:
    """The command; SIGTERM (a cancelled CI job) ends it like Ctrl-C: the session's processes and
    the worktrees are removed on the way out."""
    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        return _run(args, pytest_args, say)
    except ContinuousError as exc:
        print(f"pytest-hpcdemo continuous: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace, pytest_args: Sequence[str], say: Callable[[str], None]) -> int:
    cwd = Path.cwd()
    try:
        repo = Path(_git(cwd, "rev-parse", "--show-toplevel"))
    except ContinuousError:
        raise ContinuousError(f"{cwd} is not inside a git repository") from None
    relative = cwd.resolve().relative_to(repo.resolve())
    commits: dict[str, str | None] = {"base": revision(repo, args.base),
                                      "head": revision(repo, args.head) if args.head else None}
    report = Path(args.hpc_report).resolve() if args.hpc_report else None
    if report is not None:
        try:
            history.check_folder(report, "--hpc-report", write=True)
        except history.HistoryError as exc:
            raise ContinuousError(str(exc)) from None
    base_commit, head_commit = commits["base"] or "", commits["head"]
    names = {"base": f"{args.base} ({base_commit[:10]})",
             "head": f"{args.head} ({head_commit[:10]})" if head_commit else "the working tree"}
    say(f"continuous: {names['base']} vs {names['head']}: {args.pairs} session pairs, "
        f"{args.timer} time, min effect {args.min_effect:.0%}, alpha {args.alpha:g} over all series")
    order = session_order(args.pairs)
    results: list[dict[str, dict[str, Figure]]] = [{} for _ in range(args.pairs)]
    started = time.perf_counter()
    with worktrees(repo, commits) as trees, tempfile.TemporaryDirectory(prefix="hpcdemo-sessions-") as tmp:
        for n, (pair, which) in enumerate(order):
            extra = list(pytest_args)
            if report is not None and n == max(i for i, (_, w) in enumerate(order) if w == "head"):
                extra.append(f"--hpc-report={report}")
            t0 = time.perf_counter()
            data = run_session(trees[which] / relative, trees[which], extra, Path(tmp) / f"{n}.json",
                               Path(tmp) / f"{n}.log", args.session_timeout, args.timer)
            try:
                results[pair][which] = session_figures(data, TIMERS[args.timer][1])
            except (ValueError, KeyError, TypeError) as exc:
                raise ContinuousError(f"a {which} session's JSON is malformed: {exc}") from None
            say(f"session {n + 1}/{len(order)}: {which}, {len(results[pair][which])} series, "
                f"{time.perf_counter() - t0:.1f} s")
    changes = compare_sessions([(r["base"], r["head"]) for r in results], args.min_effect, args.alpha)
    failed = any(c.failed(args.both) for c in changes)
    lines = [c.line() for c in changes]
    lines += closing_lines("continuous", failed, [c.outcome for c in changes],
                           sum(not c.note for c in changes))
    lines.append(f"continuous: {len(order)} sessions in {time.perf_counter() - started:.0f} s")
    for line in lines:
        say(line)
    if report is not None:
        (report / "continuous.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 1 if failed else 0
