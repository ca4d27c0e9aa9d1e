"""Whether this session uses the plugin, decided once: a session that does not is left as it would be
without the plugin (no header, no JSON keys, no MPI session, no per-test hooks).

Two moments. At configure, a session has *opted in* when its ini file says ``hpcdemo = true`` (this
repository's does; ``-o hpcdemo=true`` on the command line) or one of our options is given: only
then does pytest-hpcdemo start an MPI session under a launcher, print its header, and take the
common marker names over from whoever else registered them. After collection, a session *uses* the
plugin when it opted in, or a collected test requests one of our fixtures or carries one of our
markers. Standard library and pytest only.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable

import pytest

INI_NAME = "hpcdemo"
INI_HELP = ("use pytest-hpcdemo in this suite: its header, the MPI session under a launcher, and its "
            "meaning of the markers gpu, mpi, numba, ray, cores, timing even where others register them")

# Command-line options of ours; giving one opts the session in.
OPTION_PREFIXES = ("--hpc-", "--mpi-deadline")

# The fixtures of ours; requesting one (as defined by this package, not a suite's own fixture of
# the same name) means the session uses the plugin.
FIXTURES = frozenset({"hardware", "speedup", "claim", "executor", "executor_backend", "xp", "gpu_benchmark",
                      "mpi_benchmark", "comm", "mpi_tmp_path", "ray_cluster"})

OPTED_IN_KEY = pytest.StashKey[bool]()
IN_USE_KEY = pytest.StashKey[bool]()


def _given_args(config: pytest.Config) -> Iterable[str]:
    yield from config.invocation_params.args
    yield from shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))
    yield from config.getini("addopts")


def opted_in(config: pytest.Config) -> bool:
    """The ini's ``hpcdemo = true``, or one of our options given (decided once, at configure)."""
    if OPTED_IN_KEY not in config.stash:
        config.stash[OPTED_IN_KEY] = bool(config.getini(INI_NAME)) or any(
            str(arg).startswith(OPTION_PREFIXES) for arg in _given_args(config))
    return config.stash[OPTED_IN_KEY]


def has_pytest_mpi(config: pytest.Config) -> bool:
    """pytest-mpi is loaded in this session: ``mpi`` markers, ``--with-mpi`` and ``mpi_tmp_path``
    are then its own unless the session opted in."""
    return config.pluginmanager.has_plugin("pytest_mpi")


def in_use(config: pytest.Config) -> bool:
    """Whether the session uses the plugin; True until collection has decided (an xdist controller,
    which collects nothing, keeps the plugin as configured)."""
    return config.stash.get(IN_USE_KEY, True)


def _uses_our_fixture(item: pytest.Item) -> bool:
    names = FIXTURES.intersection(getattr(item, "fixturenames", ()))
    if not names:
        return False
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return True
    for name in names:
        defs = info.name2fixturedefs.get(name)
        if defs and getattr(defs[-1].func, "__module__", "").startswith(__name__.partition(".")[0]):
            return True
    return False


def any_item_uses_us(items: Iterable[pytest.Item], marker_names: frozenset[str]) -> bool:
    """One pass: a test requests a fixture of ours or carries a marker named in ``marker_names``
    (its own, or one of a collector above it). Every collector is looked at once, and the fixtures
    once per test function (its parametrized items share one fixture info): this pass is all that
    an unused plugin does per test."""
    marked: dict[int, bool] = {}
    seen_infos: set[int] = set()

    def node_marked(node: pytest.Item | pytest.Collector | None) -> bool:
        if node is None:
            return False
        key = id(node)
        hit = marked.get(key)
        if hit is None:
            hit = any(m.name in marker_names for m in node.own_markers) or node_marked(node.parent)
            marked[key] = hit
        return hit

    for item in items:
        if item.own_markers and any(m.name in marker_names for m in item.own_markers):
            return True
        if node_marked(item.parent):
            return True
        info = getattr(item, "_fixtureinfo", None)
        if info is not None:
            if id(info) in seen_infos:
                continue
            seen_infos.add(id(info))
        if _uses_our_fixture(item):
            return True
    return False
