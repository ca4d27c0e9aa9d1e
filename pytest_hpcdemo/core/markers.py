"""The markers this plugin registers, which of them mean ours in a session, and why a marked test
cannot run here (None when it can).

The common names (``gpu``, ``mpi``, ``numba``, ``ray``, ``cores``, ``timing``) mean ours unless the
suite registers a marker of the same name itself (its ini ``markers``, a conftest or another
plugin): then the suite's meaning is kept, and ours is still there as ``hpc_gpu``, ``hpc_numba``,
... A session that opted in (usage.py) gives every common name our meaning. ``mpi(min_size=N)`` is
pytest-mpi's marker with the same meaning: where pytest-mpi is installed it is left to pytest-mpi
unless the session opted in. Each test's markers are looked up once, on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .usage import has_pytest_mpi

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
# Always ours, whoever else registers the common name: hpc_gpu, hpc_numba, ...
NAMESPACE = "hpc_"
ALIASES = {f"{NAMESPACE}{name}": name for name in MARKERS if name != "mpi"}

INSTALL_HINT = "pip install 'pytest-hpcdemo[{extra}]'"

OURS_KEY = pytest.StashKey[frozenset[str]]()  # marker names (common and namespaced) meaning ours
NEEDS_KEY = pytest.StashKey[dict[str, pytest.Mark]]()  # a test's markers of ours, by common name


def register(config: pytest.Config) -> None:
    for line in MARKERS.values():
        config.addinivalue_line("markers", line)
    for alias, name in ALIASES.items():
        config.addinivalue_line("markers", f"{alias}: {name}'s meaning here, whoever else registers {name}.")


def _registered_by_others(config: pytest.Config) -> set[str]:
    ours = set(MARKERS.values())
    return {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")
            if line not in ours} & set(MARKERS)


def decide_names(config: pytest.Config, opted_in: bool) -> frozenset[str]:
    """The marker names meaning ours in this session: all where it opted in, else those nobody else
    registered (``mpi`` stays pytest-mpi's where that is installed). Called after collection, when
    every conftest has registered its markers."""
    taken: set[str] = set()
    if not opted_in:
        taken = _registered_by_others(config)
        if has_pytest_mpi(config):
            taken.add("mpi")
    names = frozenset({*(set(MARKERS) - taken), *ALIASES, "gate"})
    config.stash[OURS_KEY] = names
    return names


def mpi_marker_is_ours(config: pytest.Config) -> bool:
    return "mpi" in config.stash.get(OURS_KEY, frozenset(MARKERS))


def needs(item: pytest.Item) -> dict[str, pytest.Mark]:
    """The test's markers that mean ours, closest first, by common name (``hpc_gpu`` as ``gpu``):
    one pass over its markers, the first time it is asked."""
    found = item.stash.get(NEEDS_KEY, None)
    if found is None:
        ours = item.config.stash.get(OURS_KEY, frozenset({*MARKERS, *ALIASES}))
        found = {}
        for mark in item.iter_markers():
            if mark.name in ours:
                found.setdefault(ALIASES.get(mark.name, mark.name), mark)
        item.stash[NEEDS_KEY] = found
    return found


def marker(item: pytest.Item, name: str) -> pytest.Mark | None:
    """The closest marker of ours called ``name`` (or ``hpc_name``) on the test, or None."""
    return needs(item).get(name)


def mark_parametrized(items: list[pytest.Item], param: str, value: str, mark: pytest.MarkDecorator) -> None:
    """Add ``mark`` to each item parametrized with ``param=value``: a chapter's tests by backend."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get(param) == value:
            item.add_marker(mark)


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
    found = needs(item)
    if not found:
        return None
    if "timing" in found and under_xdist:
        return "timing-sensitive: pytest-xdist workers share the cores; run it without -n"
    cores = found.get("cores")
    if cores:
        needed = _marker_int(cores, "n", 1)
        if hw.usable_cores < needed:
            quota = f", cgroup quota {hw.cgroup_quota:g}" if hw.cgroup_quota else ""
            return (f"needs {needed} usable cores; this session has {hw.usable_cores} "
                    f"(affinity {hw.affinity_cores}{quota})")
    if "numba" in found and hw.numba is None:
        return f"Numba is not installed: {INSTALL_HINT.format(extra='numba')}"
    if "ray" in found and hw.ray is None:
        return f"Ray is not installed: {INSTALL_HINT.format(extra='ray')}"
    if "gpu" in found and (reason := gpu_skip_reason(hw)):
        return reason
    mpi = found.get("mpi")
    return mpi_skip_reason(mpi, hw.mpi) if mpi else None


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
