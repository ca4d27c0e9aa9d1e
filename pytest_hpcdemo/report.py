"""The claim summary: one line per claim with its figure, threshold and verdict."""

from __future__ import annotations

from dataclasses import dataclass, field

from .hardware import Hardware
from .markers import INSTALL_HINT

VERDICT_BY_OUTCOME = {"passed": "holds", "failed": "fails", "skipped": "inconclusive"}
# The first free-threaded CPython each backend publishes wheels for (None: none yet), from PyPI's
# files in 2026-12: a free-threaded build says so instead of an install hint that cannot work.
FREE_THREADED_WHEELS_SINCE: dict[str, tuple[int, int] | None] = {"numba": (3, 14), "ray": None}


@dataclass
class ClaimRecord:
    nodeid: str
    title: str = ""  # the first line of the test's docstring: the claim in words
    line: str = ""  # the figures
    verdict: str | None = None  # set by the measurement, else from the test's outcome


@dataclass
class ClaimLog:
    """Claims recorded during the session, in the order the tests ran."""

    records: dict[str, ClaimRecord] = field(default_factory=dict)

    def open(self, nodeid: str, title: str) -> None:
        self.records.setdefault(nodeid, ClaimRecord(nodeid, title))

    def record(self, nodeid: str, line: str, verdict: str | None = None) -> None:
        rec = self.records.setdefault(nodeid, ClaimRecord(nodeid))
        rec.line = f"{rec.line}; {line}" if rec.line else line
        if verdict is not None and rec.verdict != "fails":
            rec.verdict = verdict

    def settle(self, nodeid: str, outcome: str, skip_reason: str = "") -> None:
        """A claim test's outcome decides the verdict where no measurement gave one."""
        rec = self.records.get(nodeid)
        if rec is None:
            return
        if outcome == "failed":
            rec.verdict = "fails"
        elif rec.verdict is None:
            rec.verdict = VERDICT_BY_OUTCOME.get(outcome, outcome)
            if outcome == "skipped" and skip_reason and not rec.line:
                rec.line = skip_reason

    def lines(self) -> list[str]:
        width = max((len(r.nodeid) for r in self.records.values()), default=0)
        return [
            f"{(r.verdict or 'not run').upper():<12} {r.nodeid:<{width}}  {r.line or r.title}"
            for r in self.records.values()
        ]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records.values():
            key = r.verdict or "not run"
            counts[key] = counts.get(key, 0) + 1
        return counts


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
    lines = [
        f"hpcdemo: {hw.usable_cores} usable cores of {hw.logical_cores} (affinity {hw.affinity_cores}, "
        f"{quota}); Python {hw.python}, {gil}; process start method {start_method}",
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
