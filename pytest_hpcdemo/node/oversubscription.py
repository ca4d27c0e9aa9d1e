"""The oversubscription guard: ranks on this node times the threads each runs, against usable cores.

A timing claim whose candidate would run more busy threads than there are usable cores measures
the time-slicing of the scheduler, not the code: its verdict would be wrong either way. Such a claim
is reported undecided with the arithmetic as its reason, and not measured.

Threads per rank: the largest of the BLAS pools (threadpoolctl, when NumPy is loaded), OpenMP
(``OMP_NUM_THREADS``) and Numba (``NUMBA_NUM_THREADS``), each defaulting to the usable cores as
those libraries do. They are the largest, not the sum: one rank's libraries take turns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Demand:
    """How many busy threads a run puts on this node's usable cores."""

    ranks: int  # processes of one job on this node (MPI ranks), each running the claim
    threads: dict[str, int]  # library -> threads per rank
    usable_cores: int

    @property
    def threads_per_rank(self) -> int:
        return max(self.threads.values(), default=1)

    @property
    def total(self) -> int:
        return self.ranks * self.threads_per_rank

    @property
    def oversubscribed(self) -> bool:
        return self.total > self.usable_cores

    def line(self) -> str:
        libraries = ", ".join(f"{k} {v}" for k, v in self.threads.items())
        verdict = "oversubscribed" if self.oversubscribed else "fits"
        return (f"{self.ranks} rank{'s' if self.ranks != 1 else ''} x {self.threads_per_rank} threads "
                f"({libraries}) = {self.total} of {self.usable_cores} usable cores: {verdict}")


def _env_threads(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def library_threads(usable_cores: int, environ: Mapping[str, str] | None = None,
                    blas_pools: Sequence[Mapping[str, object]] | None = None) -> dict[str, int]:
    """Threads per rank of each threaded library: BLAS from its pools when known (else
    ``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS``/``OMP_NUM_THREADS``), OpenMP, Numba; each library's
    default is the usable cores."""
    environ = os.environ if environ is None else environ
    omp = _env_threads(environ, "OMP_NUM_THREADS")
    blas_env = _env_threads(environ, "OPENBLAS_NUM_THREADS") or _env_threads(environ, "MKL_NUM_THREADS")
    pools = [p["num_threads"] for p in blas_pools or () if p.get("internal_api") != "openmp"]
    blas = max((n for n in pools if isinstance(n, int)), default=blas_env or omp or usable_cores)
    return {"BLAS": blas, "OpenMP": omp or usable_cores,
            "Numba": _env_threads(environ, "NUMBA_NUM_THREADS") or usable_cores}


def claim_reason(cores_needed: int, threads_per_worker: int, ranks: int, usable_cores: int) -> str | None:
    """Why a timing claim would oversubscribe, or None: its candidate keeps ``cores_needed``
    workers of ``threads_per_worker`` busy threads each, in every one of ``ranks`` ranks."""
    demand = cores_needed * threads_per_worker * ranks
    if demand <= usable_cores:
        return None
    ranks_text = f" x {ranks} ranks on this node" if ranks > 1 else ""
    return (f"the candidate would oversubscribe the cores: {cores_needed} workers x {threads_per_worker} "
            f"threads{ranks_text} = {demand} busy threads on {usable_cores} usable cores")
