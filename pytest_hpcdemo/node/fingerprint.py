"""A fingerprint of the parallel stack for ``machine_info``: CPU model, physical and logical cores,
SMT, NUMA nodes, frequency governor, BLAS libraries and their threads, Numba's threading layer, the
MPI library, the GIL state.

Read from /proc and /sys and from what is already imported (NumPy's BLAS through threadpoolctl only
when NumPy is loaded; mpi4py's library version only when MPI is initialised), so that taking it
never starts a backend.

Which fields change results, and so stop a history comparison (``gate.compare`` refuses unless
forced, as asv refuses to compare results of different machines or environments):

* ``cpu_model``: the clock, caches and memory bandwidth per core; a ratio's ceiling moves with them
  (another node of the same model is the same machine: only absolute times are withheld then);
* ``physical_cores``, ``logical_cores``, ``usable_cpus``, ``usable_physical_cores``, ``smt``,
  ``numa_nodes``: every scaling claim's floor and ideal, and where a pool's workers land;
* ``blas_threads``: a NumPy call's own parallelism, so every claim that times NumPy in threads or
  processes (and their oversubscription);
* ``numba_threading_layer``: what ``prange`` runs on (omp, tbb, workqueue scale differently);
* ``mpi_library``, ``mpi_transport``: latency and bandwidth of every MPI claim;
* ``gil_enabled``: whether threads run Python in parallel at all;
* ``python``: implementation and minor version (the interpreter's speed and its memory).

Noted but compared (:data:`NOTED_FIELDS`): the frequency ``governor`` (a policy that may explain a
change in times) and the BLAS libraries' versions. Everything else (readings such as the current
frequency, the host name) is ignored. A field one run does not know (``None``: NumPy was not
loaded, no Numba parallel function ran) is no difference.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ..core import procfs
from ..core.hardware import (
    affinity_cpus,
    gil_state,
    numba_threading_layer_used,
    package_version,
    physical_cores_in,
)

# Fields whose change makes two runs' figures incomparable (the gate refuses unless forced), and
# fields that only may explain a difference (the gate notes them); see the module's docstring.
RESULT_FIELDS = ("cpu_model", "physical_cores", "logical_cores", "usable_cpus", "usable_physical_cores",
                 "smt", "numa_nodes", "gil_enabled", "blas_threads", "numba_threading_layer", "mpi_library",
                 "mpi_transport", "python")
NOTED_FIELDS = ("governor", "blas")
# Environment variables that choose an MPI library's transport (MPICH's netmod, UCX's, libfabric's
# provider, Open MPI's PML and BTLs): the same library over another transport is another network.
MPI_TRANSPORT_VARIABLES = ("MPIR_CVAR_CH4_NETMOD", "MPIR_CVAR_CH3_NETMOD", "UCX_TLS", "UCX_NET_DEVICES",
                           "FI_PROVIDER", "OMPI_MCA_pml", "OMPI_MCA_btl", "OMPI_MCA_mtl")



def cpu_model(cpuinfo: str) -> str | None:
    """The first ``model name`` (x86) or ``Model``/``CPU part`` line (Arm) of /proc/cpuinfo."""
    for key in ("model name", "Model", "CPU part"):
        for line in cpuinfo.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return None


def numa_nodes(listing: Iterable[str]) -> int:
    return sum(1 for name in listing if name.startswith("node") and name[4:].isdigit()) or 1


def _blas() -> list[dict[str, Any]]:
    if "numpy" not in sys.modules:
        return []
    from threadpoolctl import threadpool_info

    return [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
            for p in threadpool_info()]


def _mpi_library() -> str | None:
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized():
        return str(mpi.Get_library_version()).splitlines()[0].strip()
    mpich = package_version("mpich")
    return f"MPICH {mpich} (the mpich wheel)" if mpich else None


def mpi_transport(environ: Mapping[str, str]) -> str:
    """The transport choices made in the environment, or "library default"."""
    chosen = [f"{k}={environ[k]}" for k in MPI_TRANSPORT_VARIABLES if environ.get(k)]
    return " ".join(chosen) or "library default"


def python() -> str:
    """Implementation and minor version (``CPython 3.13``); the free-threaded build says so."""
    import platform
    import sysconfig

    threaded = "t" if sysconfig.get_config_var("Py_GIL_DISABLED") else ""
    return f"{platform.python_implementation()} {sys.version_info[0]}.{sys.version_info[1]}{threaded}"


def fingerprint() -> dict[str, Any]:
    """The parallel stack of this process, as plain JSON types."""
    cpus = affinity_cpus()
    everything = set(range(os.cpu_count() or 1))
    smt = procfs.smt_active()
    blas = _blas()
    _, gil_enabled = gil_state()
    return {
        "cpu_model": cpu_model(procfs.cpuinfo() or ""),
        "logical_cores": len(everything),
        "physical_cores": physical_cores_in(everything),
        "usable_cpus": len(cpus),
        "usable_physical_cores": physical_cores_in(cpus),
        "smt": None if smt is None else smt == "1",
        "numa_nodes": numa_nodes(procfs.numa_node_entries()),
        "governor": procfs.scaling_governor(),
        "blas": blas,
        "blas_threads": max((int(p["num_threads"]) for p in blas if p.get("num_threads")), default=None),
        "numba_threading_layer": numba_threading_layer_used() or os.environ.get("NUMBA_THREADING_LAYER"),
        "mpi_library": _mpi_library(),
        "mpi_transport": mpi_transport(os.environ),
        "gil_enabled": gil_enabled,
        "python": python(),
    }


def line(fp: Mapping[str, Any]) -> str:
    """One header line: the fields a person checks first."""
    smt = {True: "SMT on", False: "SMT off", None: "SMT unknown"}[fp["smt"]]
    pools: dict[str, int] = {}  # NumPy and SciPy may each bring a copy of one library
    for p in fp["blas"]:
        name = f"{p['internal_api']} {p['num_threads']} threads"
        pools[name] = pools.get(name, 0) + 1
    blas = ", ".join(name + (f" ({n} copies)" if n > 1 else "") for name, n in pools.items())
    governor = fp["governor"] or "not readable"
    return (f"{fp['cpu_model'] or 'unknown CPU'}: {fp['physical_cores']} physical / {fp['logical_cores']} "
            f"logical cores, {smt}, {fp['numa_nodes']} NUMA node(s), governor {governor}; "
            f"{blas or 'BLAS not loaded'}")


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(fields that change results, noted fields) that differ between two fingerprints, each as
    ``field 'old' vs 'new'``; fields either run does not know, and ignored fields, are left out."""
    def differ(k: str) -> bool:
        return old.get(k) is not None and new.get(k) is not None and old.get(k) != new.get(k)

    def shown(k: str) -> str:
        return f"{k} {old.get(k)!r} vs {new.get(k)!r}"

    return ([shown(k) for k in RESULT_FIELDS if differ(k)],
            [shown(k) for k in NOTED_FIELDS if differ(k)])
