"""Ray, where this plugin goes past its public API: the one module that touches ``ray._private``,
checked against the versions below.

Ray gives no public way to the three things used here: the port of the driver's own core worker
(which of its sockets are Ray's), the module copy of ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (read once,
at import), and the code of ``ray microbenchmark`` (the Ray chapter's reference figure). A Ray
outside :data:`CHECKED` is a one-line usage error naming both versions, not an AttributeError.
Imports Ray only when called.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

# The releases whose private modules were read for this one: >= the first, < the second
# (pyproject's ray extra says the same). Checked: 2.40, 2.60.0.
CHECKED = ((2, 40), (3, 0))


def _release(text: str) -> tuple[int, ...]:
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in text.split(".")[:2])


def check_version(version: str) -> None:
    """A pytest.UsageError naming the installed and the checked Ray versions when they differ."""
    low, high = CHECKED
    if not low <= _release(version) < high:
        import pytest

        bounds = f"'ray>={'.'.join(map(str, low))},<{'.'.join(map(str, high))}'"
        raise pytest.UsageError(f"pytest-hpcdemo uses private modules of Ray checked against {bounds}; "
                                f"Ray {version} is installed: pip install {bounds}")


def _ray() -> ModuleType:
    import ray

    check_version(ray.__version__)
    return ray


def driver_port() -> int:
    """The port of this driver's own core worker, from the owner address of an object it puts."""
    ray = _ray()
    from ray.core.generated.common_pb2 import Address

    worker = ray._private.worker.global_worker
    owner = worker.core_worker.get_owner_address(ray.put(0))
    return int(Address.FromString(owner).port)


def set_cluster_mode(enabled: bool) -> bool:
    """Set the module copy of RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, returning the previous value."""
    _ray()
    from ray._private import ray_constants

    previous = bool(ray_constants.ENABLE_RAY_CLUSTER)
    ray_constants.ENABLE_RAY_CLUSTER = enabled
    return previous


def microbenchmark() -> tuple[ModuleType, Callable[..., Any]]:
    """``ray microbenchmark``'s module of remote functions and its ``timeit``; ImportError when the
    module cannot load (it imports Ray's client, which needs grpcio)."""
    _ray()
    from ray._private import ray_perf
    from ray._private.ray_microbenchmark_helpers import timeit

    return ray_perf, timeit
