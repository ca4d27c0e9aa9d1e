"""MPI executor backend: ``mpi4py.futures.MPIPoolExecutor`` (built in the MPI issue)."""

from __future__ import annotations

from . import Backend


def _unavailable(max_workers: int):
    raise RuntimeError("the MPI executor backend is not built yet")


def mpi_backend() -> Backend:
    return Backend("mpi", _unavailable, missing="the MPI executor backend is not built yet (issue 3)")
