"""The claim summary: one line per claim with its figure, threshold and verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.hardware import Hardware
from ..core.markers import INSTALL_HINT

# What the summary counts apart. "not run": skipped before any measurement (missing hardware,
# package or launcher); "error": the test broke before a measurement could decide (a crashed pool
# worker), which is neither a claim refuted nor one undecided.
HOLDS, FAILS, INCONCLUSIVE, NOT_RUN, ERROR = "holds", "fails", "inconclusive", "not run", "error"
UNDECIDED_CAUSES = ("noise", "load")
DEFAULT_STRICT_UNDECIDED = 0.25  # --hpc-strict fails a session with a larger share of claims undecided
# The first free-threaded CPython each backend publishes wheels for (None: none yet), from PyPI's
# files in 2026-12: a free-threaded build says so instead of an install hint that cannot work.
FREE_THREADED_WHEELS_SINCE: dict[str, tuple[int, int] | None] = {"numba": (3, 14), "ray": None}


@dataclass
class ClaimRecord:
    nodeid: str
    title: str = ""  # the first line of the test's docstring: the claim in words
    line: str = ""  # the figures
    verdict: str | None = None  # set by the measurement, else from the test's outcome
    undecided_by: str = ""  # "noise" or "load" for an inconclusive claim
    leans_to_fail: bool = False  # inconclusive with its median on the failing side of its bound

    @property
    def category(self) -> str:
        """The summary's count this claim falls in: "inconclusive (load)" apart from "(noise)"."""
        verdict = self.verdict or NOT_RUN
        if verdict == INCONCLUSIVE:
            return f"{INCONCLUSIVE} ({self.undecided_by or 'noise'})"
        return verdict


def docstring_title(function: object) -> str:
    """The first line of a test function's docstring: the claim in words."""
    doc = (getattr(function, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def error_of(report: Any, excinfo: Any) -> str:
    """The exception that broke a failed test before its claim was decided (a fixture's, a crashed
    pool's: BrokenProcessPool), in one line; "" for a passed test, an assertion or a claim that failed
    (``pytest.fail``)."""
    import pytest

    if not report.failed or excinfo is None:
        return ""
    if report.when == "call" and excinfo.errisinstance((AssertionError, pytest.fail.Exception)):
        return ""
    message = str(excinfo.value).strip().partition("\n")[0]
    return f"error: {excinfo.typename}: {message}" if message else f"error: {excinfo.typename}"


def _is_inconclusive_skip(reason: str) -> bool:
    return reason.removeprefix("Skipped: ").startswith("inconclusive")


@dataclass
class ClaimLog:
    """Claims recorded during the session, in the order the tests ran."""

    records: dict[str, ClaimRecord] = field(default_factory=dict)

    def open(self, nodeid: str, title: str) -> None:
        self.records.setdefault(nodeid, ClaimRecord(nodeid, title))

    def record(self, nodeid: str, line: str, verdict: str | None = None, *, undecided_by: str = "",
               leans_to_fail: bool = False) -> None:
        rec = self.records.setdefault(nodeid, ClaimRecord(nodeid))
        rec.line = f"{rec.line}; {line}" if rec.line else line
        if verdict is not None and rec.verdict != FAILS:
            rec.verdict = verdict
        if verdict == INCONCLUSIVE:
            rec.undecided_by = "load" if "load" in (rec.undecided_by, undecided_by) else undecided_by
            rec.leans_to_fail = rec.leans_to_fail or leans_to_fail

    def settle(self, nodeid: str, outcome: str, skip_reason: str = "", error: str = "") -> None:
        """A claim test's outcome decides the verdict where no measurement gave one. ``error`` is
        the exception that ended a failed test other than an assertion or a claim's failure: the
        claim was never measured to the end, so it counts as an error, not as refuted."""
        rec = self.records.get(nodeid)
        if rec is None:
            return
        if outcome == "failed":
            rec.verdict = ERROR if error else FAILS
            if error:
                rec.line = f"{rec.line}; {error}" if rec.line else error
        elif rec.verdict is None and outcome == "skipped":
            rec.verdict = INCONCLUSIVE if _is_inconclusive_skip(skip_reason) else NOT_RUN
            if rec.verdict == INCONCLUSIVE:
                rec.undecided_by = "load" if "other processes" in skip_reason else "noise"
            if skip_reason and not rec.line:
                rec.line = skip_reason
        elif rec.verdict is None:
            rec.verdict = HOLDS if outcome == "passed" else outcome

    def lines(self) -> list[str]:
        width = max((len(r.nodeid) for r in self.records.values()), default=0)
        return [
            f"{(r.verdict or NOT_RUN).upper():<12} {r.nodeid:<{width}}  {r.line or r.title}"
            for r in self.records.values()
        ]

    def counts(self) -> dict[str, int]:
        """Claims per category: holds, fails, inconclusive (noise), inconclusive (load), not run, error."""
        counts: dict[str, int] = {}
        for r in self.records.values():
            counts[r.category] = counts.get(r.category, 0) + 1
        return counts

    def count_line(self) -> str:
        """"claims: 3 holds, 1 inconclusive (load), 2 not run": the categories that occur, in order."""
        order = [HOLDS, FAILS, *(f"{INCONCLUSIVE} ({c})" for c in UNDECIDED_CAUSES), NOT_RUN, ERROR]
        counts = self.counts()
        order += sorted(set(counts) - set(order))
        return "claims: " + ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))

    def strict_failure(self, undecided_share: float) -> str | None:
        """Why ``--hpc-strict`` fails this session, or None: a claim stayed inconclusive with its
        median on the failing side of its bound, or more than ``undecided_share`` of the claims
        that ran stayed undecided."""
        leaning = [r.nodeid for r in self.records.values() if r.verdict == INCONCLUSIVE and r.leans_to_fail]
        if leaning:
            more = f" (and {len(leaning) - 1} more)" if len(leaning) > 1 else ""
            return (f"--hpc-strict: {leaning[0]}{more} stayed inconclusive with its median on the failing "
                    f"side of its bound")
        ran = [r for r in self.records.values() if r.verdict not in (None, NOT_RUN)]
        undecided = sum(r.verdict == INCONCLUSIVE for r in ran)
        if ran and undecided / len(ran) > undecided_share:
            return (f"--hpc-strict: {undecided} of {len(ran)} claims stayed undecided, more than the "
                    f"{undecided_share:.0%} allowed (--hpc-strict-undecided)")
        return None


def missing_backend(hw: Hardware, name: str) -> str:
    """Why a backend is missing: an install hint, or that no wheel exists for this free-threaded build."""
    since = FREE_THREADED_WHEELS_SINCE.get(name, (0, 0))
    version = tuple(int(v) for v in hw.python.split(".")[:2])
    if hw.free_threaded_build and (since is None or version < since):
        return (f"{name} missing: it publishes no wheels for free-threaded CPython {hw.python} yet; "
                f"its chapter runs on a GIL build")
    return f"{name} missing ({INSTALL_HINT.format(extra=name)})"


def header_lines(hw: Hardware, start_method: str) -> list[str]:
    """One line per backend: found, with version and the figure that matters, or missing and why."""
    quota = f"cgroup quota {hw.cgroup_quota:g}" if hw.cgroup_quota else "no cgroup quota"
    gil = "GIL enabled" if hw.gil_enabled else "GIL disabled (free-threaded)"
    if hw.free_threaded_build and hw.gil_enabled:
        gil = "GIL re-enabled on a free-threaded build"
    threads = ", ".join(f"{k}={v}" for k, v in hw.thread_env.items()) or "no thread variables set"
    smt = (f"; SMT siblings: {hw.affinity_cores} CPUs on {hw.physical_cores} physical cores, CPU-bound "
           f"claims count {hw.cpu_bound_cores}" if hw.smt_siblings else "")
    lines = [
        f"hpcdemo: {hw.usable_cores} usable cores of {hw.logical_cores} (affinity {hw.affinity_cores}, "
        f"{quota}{smt}); Python {hw.python}, {gil}; process start method {start_method}",
        f"hpcdemo: numpy {hw.numpy or 'missing'}; {threads}",
        f"hpcdemo: numba {hw.numba}, threading layer {hw.numba_threading_layer} configured "
        f"(the layer used goes to machine_info once parallel code ran)" if hw.numba
        else f"hpcdemo: {missing_backend(hw, 'numba')}",
    ]
    mpi = hw.mpi
    if mpi is None or mpi.mpi4py is None:
        lines.append(f"hpcdemo: mpi missing ({INSTALL_HINT.format(extra='mpi')})")
    elif mpi.launched:
        crowded = (f"; oversubscribed ({mpi.local_size} ranks on {hw.usable_cores} usable cores): waiting "
                   "ranks yield their core (MPIR_CVAR_POLLS_BEFORE_YIELD=1, ...)"
                   if mpi.local_size > hw.usable_cores else "")
        lines.append(f"hpcdemo: mpi4py {mpi.mpi4py} under {mpi.launcher}: "
                     f"rank {mpi.rank} of {mpi.world_size}{crowded}")
    else:
        lines.append(f"hpcdemo: mpi4py {mpi.mpi4py}, not under a launcher: run mpirun -n 4 pytest -m mpi")
    if hw.ray is None:
        lines.append(f"hpcdemo: {missing_backend(hw, 'ray')}")
    else:
        where = (f"cluster at RAY_ADDRESS={hw.ray_address} (connected" if hw.ray_address
                 else "local cluster on 127.0.0.1 (started")
        lines.append(f"hpcdemo: ray {hw.ray}, {where} only when a ray test is selected; resources follow)")
    gpu = hw.gpu
    if gpu is not None and gpu.usable:
        # From the driver's files and nvidia-smi; CuPy's CUDA versions follow once a gpu test is collected.
        lines.append(f"hpcdemo: gpu: cupy {gpu.cupy}, NVIDIA driver {gpu.driver}: {'; '.join(gpu.devices)}")
    elif gpu is not None:
        lines.append(f"hpcdemo: gpu missing: {gpu.missing_reason}")
    return lines


def hardware_info(hw: Hardware) -> dict[str, object]:
    """The facts for pytest-benchmark's machine_info (imports NumPy for its BLAS pools)."""
    info = hw.as_dict()
    info["blas"] = hw.blas_pools()
    return info
