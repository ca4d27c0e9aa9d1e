"""MPI executor backend: ``mpi4py.futures.MPIPoolExecutor``, whose workers ``MPI_Comm_spawn`` starts.

What it cannot offer: cancelling a running task (no ``concurrent.futures`` executor can), and shared
memory (tasks and results are pickled to and from the worker processes).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import Backend

if TYPE_CHECKING:
    from mpi4py.futures import MPIPoolExecutor


def make_mpi_pool(max_workers: int) -> MPIPoolExecutor:
    from mpi4py.futures import MPIPoolExecutor

    return MPIPoolExecutor(max_workers=max_workers)


def _cannot_spawn() -> str | None:
    """Why spawning would fail here, None when it can work.

    A process not started by a launcher is an MPI singleton; MPICH then runs ``mpiexec`` from PATH
    to spawn, and without one aborts (or hangs). The ``mpich`` wheel's mpiexec sits beside this
    interpreter, which is not on PATH when the virtual environment is not activated: put it there.
    """
    from ..core.hardware import detect_mpi, package_version

    if package_version("mpi4py") is None:
        return "mpi4py is not installed: pip install 'pytest-hpcdemo[mpi]'"
    if detect_mpi().launched or shutil.which("mpiexec"):
        return None
    beside = Path(sys.executable).parent
    if (beside / "mpiexec").exists():
        os.environ["PATH"] = f"{beside}{os.pathsep}{os.environ.get('PATH', '')}"
        return None
    return ("MPIPoolExecutor spawns its workers through mpiexec, which is not on PATH: "
            "pip install 'pytest-hpcdemo[mpi]' (the mpich wheel) or put your MPI's bin on PATH")


def mpi_backend() -> Backend:
    return Backend("mpi", make_mpi_pool, missing=_cannot_spawn())
