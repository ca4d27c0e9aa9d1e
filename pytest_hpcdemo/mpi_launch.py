"""Which MPI launcher this process runs under, and what MPI must be told before it starts.

Standard library only and tiny, since the plugin reads it at start-up in every session; the MPI
session itself (mpi.py) is imported only under a launcher.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import NamedTuple

# What launchers set in every rank: (size, rank, ranks on this node, launcher name).
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


def launch_of(environ: Mapping[str, str]) -> Launch | None:
    """The launcher this process runs under, from its environment; None outside one, including in
    a process that only inherited a rank's environment (MPICH's ``PMI_FD`` is checked)."""
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
