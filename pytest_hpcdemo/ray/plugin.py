"""ray: the session's cluster (fixture ``ray_cluster``), started at the first test that is marked
``ray`` (the executor conformance suite's "ray" parameter is marked too) or asks for the fixture, and
stopped after the last one, so that other chapters' measurements never share the cores with it.

Local mode: a cluster sized to the usable cores, every listener on 127.0.0.1, no dashboard, usage
statistics off, worker output kept out of pytest's. With ``RAY_ADDRESS`` set: a connection to that
cluster, made after collection so that its resources are in the header. Under pytest-xdist each
worker would start its own cluster on the same cores, so Ray tests are skipped there unless
``RAY_ADDRESS`` names one cluster for all of them.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from ..core.markers import mark_parametrized, marker
from ..core.session import hardware_of, register_session, under_xdist
from ..core.usage import in_use

if TYPE_CHECKING:
    from .cluster import RayCluster

CLUSTER_KEY = pytest.StashKey["RayCluster | str"]()  # the cluster, or why it did not start
SESSION_PLUGIN = "hpcdemo.ray_session"
LAST_RAY_ITEM_KEY = pytest.StashKey[pytest.Item]()  # after its teardown the cluster is stopped
XDIST_REASON = ("ray: each pytest-xdist worker would start its own cluster on the same cores; run Ray tests "
                "without -n, or set RAY_ADDRESS to a cluster they share (ray start --head)")


def _address(config: pytest.Config) -> str | None:
    return hardware_of(config).ray_address or None


def cluster_of(config: pytest.Config) -> RayCluster:
    """The session's cluster, started (or connected) on first use, again if a test wants it after
    the one collected last stopped it; a test errors when it cannot start."""
    current = config.stash.get(CLUSTER_KEY, None)
    if current is None or (not isinstance(current, str) and current.stop_s is not None):
        config.stash[CLUSTER_KEY] = _start(config)
    cluster = config.stash[CLUSTER_KEY]
    if isinstance(cluster, str):
        pytest.fail(f"the Ray cluster did not start: {cluster}", pytrace=False)
    return cluster


def _start(config: pytest.Config) -> RayCluster | str:
    """A cluster with its RaySession registered (in place of a stopped one's), or why it did not
    start (then no RaySession)."""
    from .cluster import start_cluster

    stopped = config.pluginmanager.get_plugin(SESSION_PLUGIN)
    if stopped is not None:
        config.pluginmanager.unregister(stopped)
    try:
        cluster = start_cluster(hardware_of(config).usable_cores, _address(config))
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    register_session(config, RaySession(config, cluster), SESSION_PLUGIN)
    return cluster


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_use(config):
        mark_parametrized(items, "executor_backend", "ray", pytest.mark.hpc_ray)


def _uses_ray(item: pytest.Item) -> bool:
    return marker(item, "ray") is not None or "ray_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter's, which asks for the lines below
def pytest_collection_finish(session: pytest.Session) -> None:
    ray_items = [item for item in session.items if _uses_ray(item)]
    if ray_items:
        session.config.stash[LAST_RAY_ITEM_KEY] = ray_items[-1]


def pytest_report_collectionfinish(config: pytest.Config) -> list[str]:
    """What the Ray tests will run on: an existing cluster is connected to now, to show its resources."""
    if (LAST_RAY_ITEM_KEY not in config.stash or config.getoption("collectonly") or under_xdist(config)
            or hardware_of(config).ray is None):
        return []
    if _address(config) is None:
        from .cluster import OBJECT_STORE_BYTES

        return [f"hpcdemo: ray local cluster on 127.0.0.1, from the first ray test to the last: "
                f"{hardware_of(config).usable_cores} CPUs, object store {OBJECT_STORE_BYTES >> 20} MiB, "
                f"no dashboard, workers at nice 0"]
    try:
        return [f"hpcdemo: {cluster_of(config).describe()}"]
    except pytest.fail.Exception:
        return [f"hpcdemo: ray: the cluster did not start: {config.stash[CLUSTER_KEY]}"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked ``ray`` finds the cluster up, whether or not it asks for the fixture. (Not an
    autouse fixture: that would sit in the fixture closure of every test of every suite.)"""
    if not _uses_ray(item):
        return
    if under_xdist(item.config) and _address(item.config) is None:
        pytest.skip(XDIST_REASON)
    if marker(item, "ray") and hardware_of(item.config).ray is not None:
        cluster_of(item.config)


@pytest.fixture(scope="session")
def ray_cluster(pytestconfig: pytest.Config) -> RayCluster:
    """The session's Ray cluster: local on 127.0.0.1, or the one RAY_ADDRESS names."""
    return cluster_of(pytestconfig)


class RaySession:
    """The hooks of a started cluster: registered as a plugin when it starts (core.session.
    register_session), so that they need no "is there a cluster" guard. It is stopped after the
    teardown of the last test that uses Ray, or at the end of the session."""

    def __init__(self, config: pytest.Config, cluster: RayCluster) -> None:
        self.config = config
        self.cluster = cluster

    def _stop(self) -> None:
        if self.cluster.stop_s is None:
            self.cluster.stop()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, None, None]:
        result = yield
        if item is self.config.stash.get(LAST_RAY_ITEM_KEY, None):
            self._stop()
        return result

    def pytest_sessionfinish(self) -> None:
        self._stop()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_line(f"hpcdemo: {self.cluster.describe()}")
        terminalreporter.write_line(f"hpcdemo: {self.cluster.stop_line()}")

    @pytest.hookimpl(optionalhook=True)
    def pytest_benchmark_update_machine_info(self, machine_info: dict[str, Any]) -> None:
        from ..core.figures import RAY

        machine_info[RAY] = self.cluster.as_dict()
