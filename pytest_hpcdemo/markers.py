"""The markers this plugin registers, and why a marked test cannot run here (None when it can)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .hardware import Hardware, MpiInfo

MARKERS = {
    "gpu": "gpu: needs CuPy and a usable NVIDIA GPU; skipped with the reason otherwise.",
    "mpi": "mpi(min_size=1): needs mpi4py and at least min_size MPI ranks (mpirun -n N pytest -m mpi); "
           "deadline=S overrides --mpi-deadline.",
    "numba": "numba: needs Numba; skipped with the reason otherwise.",
    "ray": "ray: needs Ray; a local cluster on 127.0.0.1 is started unless RAY_ADDRESS names one.",
    "cores": "cores(n): needs n usable cores (CPU affinity and cgroup quota both counted).",
    "timing": "timing: timing-sensitive; skipped under pytest-xdist, whose workers share the cores.",
}

INSTALL_HINT = "pip install 'pytest-hpcdemo[{extra}]'"


def _marker_int(marker: pytest.Mark, key: str, default: int) -> int:
    value = marker.kwargs.get(key, marker.args[0] if marker.args else default)
    if not isinstance(value, int) or value < 1:
        raise pytest.UsageError(
            f"@pytest.mark.{marker.name}({key}=...) takes a whole number >= 1, got {value!r}"
        )
    return value


def gpu_skip_reason(hw: Hardware) -> str | None:
    """Why GPU work cannot run here (CuPy missing, no driver, no device, CuPy unable), or None.

    The driver's files first, which costs nothing; only where they show a GPU is CuPy imported and
    asked (once per process), since a CuPy built for a newer CUDA than the driver still fails.
    """
    if hw.gpu is None:
        return None
    if hw.gpu.missing_reason:
        return f"no usable GPU: {hw.gpu.missing_reason}"
    from .hardware import cuda_runtime

    error = cuda_runtime().error
    return f"no usable GPU: CuPy {hw.gpu.cupy} cannot use it: {error}" if error else None


def skip_reason(item: pytest.Item, hw: Hardware, under_xdist: bool) -> str | None:
    """Why ``item`` must be skipped on this machine and in this session, or None."""
    if item.get_closest_marker("timing") and under_xdist:
        return "timing-sensitive: pytest-xdist workers share the cores; run it without -n"
    marker = item.get_closest_marker("cores")
    if marker:
        needed = _marker_int(marker, "n", 1)
        if hw.usable_cores < needed:
            quota = f", cgroup quota {hw.cgroup_quota:g}" if hw.cgroup_quota else ""
            return (f"needs {needed} usable cores; this session has {hw.usable_cores} "
                    f"(affinity {hw.affinity_cores}{quota})")
    if item.get_closest_marker("numba") and hw.numba is None:
        return f"Numba is not installed: {INSTALL_HINT.format(extra='numba')}"
    if item.get_closest_marker("ray") and hw.ray is None:
        return f"Ray is not installed: {INSTALL_HINT.format(extra='ray')}"
    if item.get_closest_marker("gpu") and (reason := gpu_skip_reason(hw)):
        return reason
    marker = item.get_closest_marker("mpi")
    return mpi_skip_reason(marker, hw.mpi) if marker else None


def mpi_skip_reason(marker: pytest.Mark, mpi: MpiInfo | None, world_size: int | None = None) -> str | None:
    """Why an ``mpi(min_size=N)`` test cannot run; ``world_size`` is the running MPI session's
    size where one is up (else the launcher's variables tell)."""
    if mpi is None:
        return None
    min_size = _marker_int(marker, "min_size", 1)
    if mpi.mpi4py is None:
        return f"mpi4py is not installed: {INSTALL_HINT.format(extra='mpi')}"
    size = mpi.world_size if world_size is None else world_size
    if size < min_size:
        return f"needs {min_size} MPI ranks, this run has {size}: run: mpirun -n {min_size} pytest -m mpi"
    return None
