"""MPI session support: a watchdog that aborts instead of deadlocking, the
plugin's private communicator (outcome agreement, collection check, exit status, shared temporary
directories) and barrier-synchronised timing (the same rounds on every rank, max over ranks).

Module-level imports are the standard library only: mpi4py is imported when a session starts.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from ..core.procfs import mapped_shared_memory  # stdlib only, as this module's imports

if TYPE_CHECKING:
    from ..core.benchmark_compat import BenchmarkFixture

# A rank whose test failed or skipped waits this long for the others to reach the end of the test;
# longer means they are blocked in a collective that this rank never entered, and the job is ended.
LONE_RANK_GRACE_S = 10.0
BASE_PREFIX = "pytest-hpcdemo-mpi-"
ABORT_NOTICE = ".hpcdemo-aborting"  # in the base: a watchdog is aborting the job (monitor.py)
MONITOR_EXIT_S = 5.0
MONITOR_READY_S = 10.0
MISMATCH_IDS_SHOWN = 10
ABORT_DELAY_S = 1.0
# After SIGINT/SIGTERM, the longest any rank waits for the others (see Watchdog).
INTERRUPT_GRACE_S = 3.0
# The job's exit status after an abort: pytest's "tests failed", or "interrupted" after a signal.
ABORT_STATUS, INTERRUPTED_STATUS = 1, 2


# How often a rank that waits for the others checks on them. It sleeps in between, so that with more
# ranks than cores the ranks still working get the cores (MPI's own waits poll or yield, and yielding
# ranks still take a share of a crowded machine).
WAIT_POLL_S = 0.0002


class Request(Protocol):
    """What this module uses of an mpi4py ``MPI.Request``."""

    def Test(self) -> bool: ...


class Communicator(Protocol):
    """What this module uses of an mpi4py ``MPI.Comm`` (mpi4py's own stubs are not required:
    the MPI extra may be absent where the plugin is type-checked)."""

    def Get_rank(self) -> int: ...
    def Get_size(self) -> int: ...
    def Barrier(self) -> None: ...
    def Ibarrier(self) -> Request: ...
    def Free(self) -> None: ...
    def allgather(self, obj: Any) -> list[Any]: ...
    def gather(self, obj: Any, root: int = 0) -> list[Any] | None: ...
    def bcast(self, obj: Any, root: int = 0) -> Any: ...
    def allreduce(self, obj: Any, op: Any = ...) -> Any: ...


def wait_sleeping(comm: Communicator) -> None:
    """A barrier on ``comm`` that sleeps while it waits."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(WAIT_POLL_S)



class Watchdog:
    """A thread that, past a deadline, prints why, dumps every thread's stack and aborts the job.

    A SIGALRM handler never runs while the main thread is blocked inside MPI; this thread does. After
    an interrupt (SIGINT or SIGTERM, which the launcher forwards to every rank) no wait lasts longer
    than ``INTERRUPT_GRACE_S``: a rank blocked in an MPI call never sees the KeyboardInterrupt, and
    the ranks that did see it would otherwise wait for it in the session-end exchange.
    """

    def __init__(self, describe: str, abort: Callable[[int], None],
                 before_abort: Callable[[], None] = lambda: None) -> None:
        self.describe = describe  # "rank 2 of 4"
        self._abort = abort
        self._before_abort = before_abort
        # Pytest captures fd 2 during tests; the dump must reach the real stderr.
        self._stderr: TextIO = os.fdopen(os.dup(2), "w")
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._armed_at = 0.0
        self._what = ""
        self._interrupt: tuple[float, str] | None = None  # when, and which signal
        threading.Thread(target=self._run, name="hpcdemo-mpi-watchdog", daemon=True).start()

    @contextmanager
    def armed(self, seconds: float, what: str) -> Iterator[None]:
        """Within the block, the job is aborted ``seconds`` from now (or earlier if already armed)."""
        with self._cond:
            saved = (self._deadline, self._armed_at, self._what)
            now = time.monotonic()
            if self._deadline is None or now + seconds < self._deadline:
                self._deadline, self._armed_at, self._what = now + seconds, now, what
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._deadline, self._armed_at, self._what = saved
                self._cond.notify()

    def interrupted(self, signal_name: str) -> None:
        """Called (from any thread) when this rank received SIGINT or SIGTERM."""
        with self._cond:
            if self._interrupt is None:
                self._interrupt = (time.monotonic(), signal_name)
            self._cond.notify()

    def _due(self) -> tuple[float, str, bool] | None:
        """(when, why, dump the stacks) of the abort now due, None while nothing is armed."""
        if self._deadline is None:
            return None
        if self._interrupt is not None:
            at, name = self._interrupt
            cut = max(at, self._armed_at) + INTERRUPT_GRACE_S
            if cut < self._deadline:
                return cut, (f"the run was interrupted ({name} on this rank) and the ranks did not "
                             f"end it together within {INTERRUPT_GRACE_S:g} s (a rank blocked in an "
                             "MPI call never sees the interrupt)"), False
        return self._deadline, self._what, True

    def _run(self) -> None:
        with self._cond:
            while (due := self._due()) is None or time.monotonic() < due[0]:
                self._cond.wait(None if due is None else due[0] - time.monotonic())
        _, what, dump = due
        self._stderr.write(f"\nhpcdemo: {self.describe}: {what}\n")
        if dump:
            self._stderr.write(f"hpcdemo: {self.describe}: every thread's stack follows; "
                               "aborting the MPI job\n")
            self._stderr.flush()
            faulthandler.dump_traceback(file=self._stderr, all_threads=True)
        else:
            self._stderr.write(f"hpcdemo: {self.describe}: aborting the MPI job\n")
        self._stderr.flush()
        # Ranks whose deadlines pass together all get their dumps out (and forwarded by the
        # launcher) before the first abort ends every process.
        time.sleep(ABORT_DELAY_S)
        self._before_abort()
        self._abort(ABORT_STATUS if dump else INTERRUPTED_STATUS)


class MpiSession:
    """The plugin's side of an MPI run: a private duplicate of COMM_WORLD, so that its messages
    never match a test's, and the agreements every rank must reach."""

    def __init__(self, launcher: str, oversubscribed: bool, deadline_s: float, basetemp: str | None) -> None:
        from mpi4py import MPI

        from ..core.interrupts import SignalListener, signal_name

        self.comm = MPI.COMM_WORLD.Dup()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.launcher, self.oversubscribed, self.deadline_s = launcher, oversubscribed, deadline_s
        self.watchdog = Watchdog(f"rank {self.rank} of {self.size}", MPI.COMM_WORLD.Abort,
                                 self.tidy_before_abort)
        self.signals = SignalListener(lambda signum: self.watchdog.interrupted(signal_name(signum)))
        self._own_base = basetemp is None
        base: str | None = basetemp
        if self.rank == 0 and basetemp is None:
            base = tempfile.mkdtemp(prefix=BASE_PREFIX)
        elif self.rank == 0 and basetemp is not None:
            shutil.rmtree(Path(basetemp) / "shared", ignore_errors=True)  # a previous run's
        mine = (MPI.Get_processor_name(), os.getpid(), base)
        everyone = self.collective("the session start", lambda: self.comm.allgather(mine))
        self.hosts_pids = [(host, pid) for host, pid, _ in everyone]
        self.base = Path(everyone[0][2]).resolve()
        self.base.mkdir(parents=True, exist_ok=True)  # pytest makes the rank's base below it
        self.rank_tmp = self.base / f"rank{self.rank}"  # each rank's own pytest base: no clean-up races
        self._shared_count = 0
        self._notice = self.base / ABORT_NOTICE
        self._monitor = self._start_monitor() if self.rank == 0 else None

    def _start_monitor(self) -> subprocess.Popen[bytes] | None:
        """monitor.py, which names a rank that ends unannounced; on one node only (it watches
        the ranks' PIDs) and where pidfds exist (Linux)."""
        if len({host for host, _ in self.hosts_pids}) != 1 or not hasattr(os, "pidfd_open"):
            return None
        self._notice.unlink(missing_ok=True)  # a previous run's, under the same --basetemp
        spec = {"ranks": [[rank, pid, host] for rank, (host, pid) in enumerate(self.hosts_pids)],
                "base": str(self.base), "own_base": self._own_base, "notice": str(self._notice)}
        script = Path(__file__).with_name("monitor.py")
        monitor = subprocess.Popen([sys.executable, str(script), json.dumps(spec)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, start_new_session=True)
        # Tests start once it watches (the other ranks wait for rank 0 in the collection check): a
        # rank that died before would be found gone, its status unknown.
        assert monitor.stdout is not None
        with monitor.stdout:
            select.select([monitor.stdout], [], [], MONITOR_READY_S)
        return monitor

    def _stop_monitor(self) -> None:
        """Tell the monitor that the session ends as it should (every rank is in close())."""
        if self._monitor is None or self._monitor.stdin is None:
            return
        with suppress(OSError):
            self._monitor.stdin.write(b"end\n")
            self._monitor.stdin.close()
        try:
            self._monitor.wait(MONITOR_EXIT_S)
        except subprocess.TimeoutExpired:
            self._monitor.kill()
            self._monitor.wait()

    def ranks_line(self) -> str:
        """Each rank's host and PID: the launcher names a rank that died by its PID only."""
        ranks = ", ".join(f"{rank} {host}:{pid}" for rank, (host, pid) in enumerate(self.hosts_pids))
        return f"hpcdemo: mpi ranks (rank host:pid): {ranks}"

    def tidy_before_abort(self) -> None:
        """What an aborted job would leave: the temporary base this session made (not a
        --basetemp), which each rank removes whole, since the first rank to abort takes the others
        down; and the names of the shared memory this rank maps (MPICH's ``mpich_shm_*``), which the
        launcher's clean-up does not unlink. The mappings stay valid until the processes end."""
        with suppress(OSError):
            self._notice.touch()  # the monitor stays quiet: this abort has said why
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)
        for name in mapped_shared_memory():
            with suppress(OSError):
                os.unlink(name)

    def collective(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run a plugin collective under the deadline."""
        why = f"the ranks did not meet for {what} within {self.deadline_s:g} s"
        with self.watchdog.armed(self.deadline_s, why):
            return fn()

    def collection_mismatch(self, nodeids: Sequence[str], errors: int) -> str | None:
        """None when every rank collected the same tests, else the error to raise: on rank 0 the
        test ids each rank lacks, on the others an empty text (rank 0 alone prints it)."""
        digest = hashlib.sha256("\n".join(nodeids).encode()).hexdigest()[:12]
        mine = (len(nodeids), errors, digest)
        everyone = self.collective("the collection check", lambda: self.comm.allgather(mine))
        if len(set(everyone)) == 1:
            return None
        collected = self.collective("the collection check", lambda: self.comm.gather(list(nodeids), root=0))
        if self.rank != 0:
            return ""
        union = sorted(set().union(*collected), key=lambda nodeid: (nodeid not in collected[0], nodeid))
        lines = []
        for rank, ((count, errs, _), ids) in enumerate(zip(everyone, collected, strict=True)):
            has = set(ids)
            lacking = [nodeid for nodeid in union if nodeid not in has]
            shown = ", ".join(lacking[:MISMATCH_IDS_SHOWN])
            more = len(lacking) - MISMATCH_IDS_SHOWN
            shown += f" and {more} more" if more > 0 else ""
            what = f"lacks {shown}" if lacking else "lacks none"
            lines.append(f"rank {rank} ({count} tests, {errs} collection errors) {what}")
        return ("MPI ranks collected different tests: " + "; ".join(lines) +
                ". Every rank must see the same files, options and selection")

    def gather_outcome(self, outcome: str, text: str, what: str) -> list[tuple[str, str]]:
        """Every rank's (outcome, text) for one test phase. A rank that failed or skipped and is
        left waiting (the others block in a collective it never entered) ends the job instead of
        hanging."""
        if outcome == "passed":
            wait_sleeping(self.comm)
            return self.comm.allgather((outcome, text))
        why = (f"{what} {outcome} on this rank and the other ranks did not reach its end within "
               f"{LONE_RANK_GRACE_S:g} s (waiting in a collective this rank never entered?); "
               f"{'the failure' if outcome == 'failed' else 'the reason'}:\n{text}")
        with self.watchdog.armed(LONE_RANK_GRACE_S, why):
            wait_sleeping(self.comm)
            return self.comm.allgather((outcome, text))

    def agree_exitstatus(self, status: int) -> int:
        return max(self.collective("the end of the session", lambda: self.comm.allgather(int(status))))

    def shared_dir(self, name: str) -> Path:
        """A fresh directory that every rank sees (on one node, or under a shared --basetemp)."""
        self._shared_count += 1
        path = self.base / "shared" / f"{self._shared_count:04d}-{name}"
        if self.rank == 0:
            path.mkdir(parents=True)
        self.collective("a shared temporary directory", self.comm.Barrier)
        return path

    def close(self) -> None:
        self.collective("the end of the session", self.comm.Barrier)
        self._stop_monitor()  # before any rank can pass the next barrier and exit
        if self._own_base:
            shutil.rmtree(self.rank_tmp, ignore_errors=True)
            self.collective("the end of the session", self.comm.Barrier)
            if self.rank == 0:
                shutil.rmtree(self.base, ignore_errors=True)
        self.comm.Free()
        self.signals.close()


# ---------------------------------------------------------------------------------------------
# Barrier-synchronised timing


class MpiTimer:
    """Times a callable on every rank of ``comm`` alike: rank 0 calibrates and broadcasts the
    iteration and round counts, each round starts after a barrier, and a round's time is the
    maximum over ranks (the collective operation ends when its slowest rank does)."""

    def __init__(self, comm: Communicator, min_round_s: float = 0.01, max_iterations: int = 1 << 16) -> None:
        self.comm, self.min_round_s, self.max_iterations = comm, min_round_s, max_iterations

    def round(self, fn: Callable[[], object], iterations: int) -> float:
        """Seconds per iteration of one round, the slowest rank's."""
        from mpi4py import MPI

        wait_sleeping(self.comm)
        t0 = time.perf_counter()
        for _ in range(iterations):
            fn()
        seconds = time.perf_counter() - t0
        wait_sleeping(self.comm)  # a rank done early sleeps rather than polls while others still run
        return self.comm.allreduce(seconds, op=MPI.MAX) / iterations

    def calibrate(self, fn: Callable[[], object], time_s: float, min_rounds: int = 5,
                  max_rounds: int = 50) -> tuple[int, int]:
        """(rounds, iterations): rounds of at least ``min_round_s`` within about ``time_s``."""
        iterations = 1
        while True:
            seconds = self.round(fn, iterations) * iterations
            grow = self.comm.bcast(seconds < self.min_round_s and iterations < self.max_iterations, root=0)
            if not grow:
                break
            iterations *= 2
        rounds = max(min_rounds, min(max_rounds, int(time_s / max(seconds, 1e-9))))
        return self.comm.bcast((rounds, iterations), root=0)

    def rounds(self, fn: Callable[[], object], rounds: int, iterations: int) -> list[float]:
        return [self.round(fn, iterations) for _ in range(rounds)]

    def interleaved(self, baseline: Callable[[], object], candidate: Callable[[], object], rounds: int,
                    iterations: tuple[int, int]) -> tuple[list[float], list[float]]:
        """Per-iteration seconds of both, in the order A B, B A, A B, ... (drifts hit both alike)."""
        base: list[float] = []
        cand: list[float] = []
        for i in range(rounds):
            pair = [(base, baseline, iterations[0]), (cand, candidate, iterations[1])]
            for out, fn, n in pair if i % 2 == 0 else pair[::-1]:
                out.append(self.round(fn, n))
        return base, cand


def machine_id(fallback: str) -> str:
    """The running kernel's boot id (the same in every namespace of one machine), else ``fallback``."""
    from ..core.procfs import boot_id

    return boot_id() or fallback


class MpiBenchmark:
    """The ``mpi_benchmark`` fixture: MpiTimer rounds, stored as this test's pytest-benchmark entry
    (the first measurement of the test) with the figures and the MPI run in ``extra_info``."""

    def __init__(self, comm: Communicator, benchmark: BenchmarkFixture | None, nodeid: str, log: Any,
                 confidence: float, budget_s: float, run: dict[str, Any]) -> None:
        from mpi4py import MPI

        self.timer = MpiTimer(comm)
        self.benchmark, self.nodeid, self.log = benchmark, nodeid, log
        self.confidence, self.budget_s, self.run = confidence, budget_s, run
        # The machine's busy time tells other processes' load only when all ranks share the machine
        # (one kernel: one boot id, whatever host names namespaces give the ranks).
        self.one_node = len(set(comm.allgather(machine_id(MPI.Get_processor_name())))) == 1
        if benchmark is not None:
            from ..core.figures import MPI as MPI_RUN

            benchmark.extra_info[MPI_RUN] = run

    def __call__(self, fn: Callable[[], object], *, name: str, budget_factor: float = 0.1) -> dict[str, Any]:
        """Time ``fn`` (called on every rank) and return its figures: seconds per call, slowest rank."""
        from ..core.claims import record_figures
        from ..core.measure import median

        rounds, iterations = self.timer.calibrate(fn, self.budget_s * budget_factor)
        samples = self.timer.rounds(fn, rounds, iterations)
        figures = {"median_s": median(samples), "min_s": min(samples), "rounds": rounds,
                   "iterations": iterations, "samples_s": samples}
        record_figures(self.benchmark, name, samples, figures)
        return figures

    def _foreign_load(self, run: Callable[[], object]) -> float | None:
        """Cores' worth of CPU that processes other than the ranks took while ``run`` ran."""
        from mpi4py import MPI

        from ..core.measure import foreign_load, system_busy_seconds

        busy0, cpu0, t0 = system_busy_seconds(), time.process_time(), time.perf_counter()
        run()
        wall = time.perf_counter() - t0
        ours = self.timer.comm.allreduce(time.process_time() - cpu0, op=MPI.SUM)
        busy1 = system_busy_seconds()
        if busy0 is None or busy1 is None or not self.one_node:
            return None
        return self.timer.comm.bcast(foreign_load(busy1 - busy0, ours, wall), root=0)

    def compare(self, baseline: Callable[[], object], candidate: Callable[[], object], claims: Sequence[Any],
                *, name: str, cores_needed: int = 1, budget_factor: float = 0.3) -> dict[str, Any]:
        """Interleaved rounds of both; each claim (metric ``speedup`` = baseline time / candidate
        time) gets a verdict from the per-round ratios: fails the test, holds, or skips it as
        inconclusive with the figures, as does any verdict reached while other processes took the
        cores the claim needs (measure.too_loaded, the rule of every measurement). The figures
        have the keys of measure.Measurement.figures(). Every rank sees the same (max over ranks)
        times and reaches the same verdict."""
        from ..core import measure
        from ..core.claims import enforce, record_figures

        time_s = self.budget_s * budget_factor / 2
        rounds_b, iter_b = self.timer.calibrate(baseline, time_s)
        rounds_c, iter_c = self.timer.calibrate(candidate, time_s)
        rounds = max(rounds_b, rounds_c, 7)
        times: list[list[float]] = []
        started = time.perf_counter()
        load = self._foreign_load(
            lambda: times.extend(self.timer.interleaved(baseline, candidate, rounds, (iter_b, iter_c))))
        elapsed = time.perf_counter() - started
        base, cand = times
        ratios = [b / c for b, c in zip(base, cand, strict=True)]
        # One planned look at a fixed number of rounds; the claims share the error (Bonferroni).
        decisions = [measure.decide(ratios, claim, self.confidence, family=len(claims)) for claim in claims]
        verdict = measure.overall(decisions)
        # The load rule of measure.Measurement, both ways: the load is known for the whole run only,
        # so under load every round is contested, whichever way the claim leans.
        contested = measure.too_loaded(load, self.run["usable_cores"], cores_needed)
        undecided_by = ""
        if contested or verdict is measure.Verdict.INCONCLUSIVE:
            verdict = measure.Verdict.INCONCLUSIVE
            undecided_by = "load" if contested else "noise"
        reason = "" if verdict is not measure.Verdict.INCONCLUSIVE else (
            f"other processes took {load:.2f} cores in all {rounds} rounds; this claim needs {cores_needed}"
            if contested else f"too noisy to decide at {self.confidence:.0%} confidence; "
            f"{measure.more_needed(decisions, elapsed / rounds)}")
        leans_to_fail = verdict is measure.Verdict.INCONCLUSIVE and any(
            measure.on_failing_side(d.claim, d.median) for d in decisions)
        line = "; ".join(d.line() for d in decisions) + f"; {rounds} rounds"
        if load is not None:
            line += f"; foreign load {load:.2f} cores"
        nan = float("nan")
        figures = {  # the keys of measure.Measurement.figures(), NaN where MPI measures no such figure
            "claim": name, "verdict": verdict.value, "reason": reason, "undecided_by": undecided_by,
            "leans_to_fail": leans_to_fail, "speedup_median": measure.median(ratios),
            "speedup_best": min(base) / min(cand), "parallelism_median": nan,
            "baseline_parallelism_median": nan, "cpu_inflation_median": nan, "cpu_inflation": nan,
            "same_work": False, "foreign_load_median": nan if load is None else load,
            "rounds": rounds, "contested_rounds": rounds if contested else 0, "cores_needed": cores_needed,
            "usable_cores": self.run["usable_cores"], "confidence": self.confidence, "family": len(claims),
            "elapsed_s": elapsed, "claims": [d.as_dict() for d in decisions],
            "baseline_s": base, "candidate_s": cand,
            # MPI's own
            "baseline_median_s": measure.median(base), "candidate_median_s": measure.median(cand),
            "iterations": [iter_b, iter_c], "foreign_load": load,
        }
        record_figures(self.benchmark, name, cand, figures)
        self.log.record(self.nodeid, f"{name}: {line}", verdict.value, undecided_by=undecided_by,
                        leans_to_fail=leans_to_fail)
        enforce(verdict, name, reason, line)
        return figures
