"""Which MPI launcher this process runs under, and what MPI must be told before it starts.

Standard library only and tiny, since the plugin reads it at start-up in every session; the MPI
session itself (session.py) is imported only under a launcher.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from typing import NamedTuple

# What launchers set in every rank: (size, rank, ranks on this node, launcher name); Slurm's srun
# is recognised before these (slurm_launch).
LAUNCHER_VARS = (
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS", "MPICH (Hydra)"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "Open MPI"),
    ("PMIX_SIZE", "PMIX_RANK", "PMIX_LOCAL_SIZE", "PMIx"),
    ("MPI_LOCALNRANKS", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "MPICH (local)"),
)

# With more ranks than cores, a rank waiting in MPI must give its core away instead of polling
# (MPICH at thread level SINGLE: each collective 8-11 ms instead of ~20 us; see NOTES). Set before
# MPI starts, and only where the user has not set them.
YIELD_WHEN_IDLE = {
    "MPIR_CVAR_POLLS_BEFORE_YIELD": "1",
    "MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1",
    "MPIR_CVAR_CH4_PROGRESS_THROTTLE_NO_PROGRESS_COUNT": "1",
    "OMPI_MCA_mpi_yield_when_idle": "1",
}


class Launch(NamedTuple):
    launcher: str
    size: int
    rank: int
    local_size: int  # ranks on this node


def pmi_fd_is_ours(text: str) -> bool:
    """Whether ``PMI_FD`` names the socket Hydra's proxy gave this process, rather than one that a
    process started inside a rank (a ``python -m pytest`` run by a test) inherited with the rank's
    environment: then the descriptor is closed here, not a socket, or its parent holds the same one.
    """
    try:
        fd = int(text)
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return False
    except (ValueError, OSError):
        return False
    try:
        return os.readlink(f"/proc/self/fd/{fd}") != os.readlink(f"/proc/{os.getppid()}/fd/{fd}")
    except OSError:  # no /proc, or the parent's descriptor is not there (the launcher's own case)
        return True


def slurm_tasks_on_node(tasks_per_node: str, node: int) -> int | None:
    """Tasks on node ``node`` from Slurm's compressed count list: "2(x3),1" is 2, 2, 2, 1."""
    counts: list[int] = []
    for part in tasks_per_node.split(","):
        match = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
        if match is None:
            return None
        counts += [int(match[1])] * int(match[2] or 1)
    return counts[node] if 0 <= node < len(counts) else None


def slurm_launch(environ: Mapping[str, str]) -> Launch | None:
    """An ``srun`` step's task (SLURM_STEP_NUM_TASKS is set by srun, not in the batch script
    itself); the PMI it gives MPI is PMI-2 with ``--mpi=pmi2`` (PMI_FD), PMIx with ``--mpi=pmix``."""
    if "SLURM_STEP_NUM_TASKS" not in environ:
        return None
    size = int(environ["SLURM_STEP_NUM_TASKS"])
    local = slurm_tasks_on_node(environ.get("SLURM_STEP_TASKS_PER_NODE", ""),
                                int(environ.get("SLURM_NODEID", "0")))
    pmi = " (PMIx)" if "PMIX_RANK" in environ else " (PMI-2)" if "PMI_FD" in environ else ""
    return Launch(f"Slurm srun{pmi}", size, int(environ.get("SLURM_PROCID", "0")), local or size)


def launch_of(environ: Mapping[str, str]) -> Launch | None:
    """The launcher this process runs under, from its environment; None outside one, including in
    a process that only inherited a rank's environment (MPICH's ``PMI_FD`` is checked)."""
    slurm = slurm_launch(environ)
    if slurm is not None:  # first: with --mpi=pmi2 srun sets Hydra's PMI_SIZE and PMI_RANK too
        return slurm
    if "PMI_FD" in environ and not pmi_fd_is_ours(environ["PMI_FD"]):
        return None
    for size_var, rank_var, local_var, name in LAUNCHER_VARS:
        if size_var in environ:
            size = int(environ[size_var])
            return Launch(name, size, int(environ.get(rank_var, "0")), int(environ.get(local_var, size)))
    return None


def yield_when_idle(environ: dict[str, str] | os._Environ[str]) -> None:
    for name, value in YIELD_WHEN_IDLE.items():
        environ.setdefault(name, value)
