"""Ray across nodes: what only a cluster of several nodes shows.

The claims need a Ray cluster of at least 2 nodes and a driver on one of them:
``RAY_ADDRESS=head:6379 pytest benchmarks/test_cluster_ray.py`` (docs/cluster.md); without
RAY_ADDRESS they skip with that reason, before any cluster is started. With
HPCDEMO_SIMULATED_RAY=1, ``pytest benchmarks`` runs them itself on two simulated hosts (network
namespaces, pytest_hpcdemo.cluster.simhosts) where the machine allows it: a head node on the first host,
a worker node joining from the second (one CPU each), and the driver beside the head. The claim
that kills a worker node runs only where the test started the cluster itself
(HPCDEMO_MAY_KILL_A_NODE=1), never on a cluster it was pointed at.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_hpcdemo.core.measure import at_least

TIMEOUT = 120.0  # every ray.get here has one: a node that died must not hang the run
ARRAY = 2**22  # float64 elements: 32 MiB, in the object store
KILL_VAR = "HPCDEMO_MAY_KILL_A_NODE"
OPT_IN_VAR = "HPCDEMO_SIMULATED_RAY"
NODES_REASON = ("needs a Ray cluster of 2 or more nodes and RAY_ADDRESS naming it: "
                "RAY_ADDRESS=head:6379 pytest benchmarks/test_cluster_ray.py (docs/cluster.md)")
INNER_TIMEOUT_S = 300.0
NODE_START_TIMEOUT_S = 60.0  # per try; a quiet machine starts a node in 3-14 s


@pytest.fixture(scope="module")
def ray_nodes(request: pytest.FixtureRequest) -> Any:
    """The ``ray`` module connected to a cluster of 2+ nodes (this file's functions sent to the
    workers by value), and the ids of its live nodes, the driver's first."""
    if not os.environ.get("RAY_ADDRESS"):
        pytest.skip(NODES_REASON)
    request.getfixturevalue("ray_cluster")
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    here = ray.get_runtime_context().get_node_id()
    alive = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
    if len(alive) < 2:
        pytest.skip(f"{NODES_REASON}; the cluster at RAY_ADDRESS has {len(alive)} live node")
    nodes = [here, *(node for node in alive if node != here)]
    # One task pinned to each node first: every node has a worker up and has reported its free
    # CPUs, which the strategies below (SPREAD, soft affinity) consult.
    pinned = ray.remote(num_cpus=1)(node_id)
    assert ray.get([pinned.options(scheduling_strategy=on(ray, node)).remote() for node in nodes],
                   timeout=TIMEOUT) == nodes
    return ray, nodes


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


def held_node_id(seconds: float) -> str:
    """Runs in a task: holds its CPU for ``seconds``, so that concurrent tasks need other slots."""
    time.sleep(seconds)
    return node_id()


def filled(nbytes: int) -> Any:
    import numpy as np

    return np.full(nbytes // 8, 1.0)


def on(ray: Any, node: str, soft: bool = False) -> Any:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node, soft=soft)


def test_spread_tasks_land_on_every_node(ray_nodes, claim) -> None:
    """Tasks submitted with ``scheduling_strategy="SPREAD"`` run on every node of the cluster, not
    only on the driver's."""
    ray, nodes = ray_nodes
    task = ray.remote(num_cpus=1)(held_node_id).options(scheduling_strategy="SPREAD")
    ran_on = ray.get([task.remote(0.2) for _ in range(2 * len(nodes))], timeout=TIMEOUT)
    assert set(ran_on) == set(nodes), f"SPREAD tasks ran on {len(set(ran_on))} of {len(nodes)} nodes"
    claim(f"{len(ran_on)} SPREAD tasks on {len(nodes)} nodes: "
          + ", ".join(f"{ran_on.count(n)} on node {i}" for i, n in enumerate(nodes)))


def test_get_of_an_object_on_another_node_is_a_transfer(ray_nodes, speedup) -> None:
    """``ray.get`` of a 32 MiB array made by a task on another node copies it over the network into
    the driver's node (unlike the same-node get, which maps the object store's memory without a
    copy): making it there and getting it here takes at least 1.5x as long as making it on the
    driver's node, since the transfer reads and writes every byte the task wrote once."""
    import numpy as np

    ray, (here, there, *_) = ray_nodes
    make = ray.remote(num_cpus=1)(filled)
    on_other, on_this = make.options(scheduling_strategy=on(ray, there)), \
        make.options(scheduling_strategy=on(ray, here))
    remote = ray.get(on_other.remote(ARRAY * 8), timeout=TIMEOUT)
    assert remote.nbytes == ARRAY * 8 and float(remote[-1]) == 1.0
    local_ref = on_this.remote(ARRAY * 8)
    first, second = ray.get(local_ref, timeout=TIMEOUT), ray.get(local_ref, timeout=TIMEOUT)
    assert np.shares_memory(first, second), "a same-node get copied the object"
    del remote, first, second

    def from_other() -> None:
        ray.get(on_other.remote(ARRAY * 8), timeout=TIMEOUT)

    def from_this() -> None:
        ray.get(on_this.remote(ARRAY * 8), timeout=TIMEOUT)

    speedup(from_other, from_this, [at_least("speedup", 1.5)], cores_needed=1,
            name=f"{ARRAY * 8 >> 20} MiB array made on another node vs on the driver's, then got")


class Tally:
    """An actor whose state is lost when its node dies: a restarted one starts from zero."""

    def __init__(self) -> None:
        self.calls = 0

    def call(self) -> tuple[int, str]:
        self.calls += 1
        return self.calls, node_id()


def end_my_node() -> None:
    """Runs in a task: kills this node's raylet (the worker's parent), as a machine failing would."""
    parent = os.getppid()
    name = Path(f"/proc/{parent}/comm").read_text().strip()
    if name != "raylet":
        raise RuntimeError(f"the worker's parent is {name!r} (pid {parent}), not the raylet: not killed")
    os.kill(parent, signal.SIGKILL)


def square_after(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value * value


def test_tasks_and_an_actor_survive_a_worker_node_killed_mid_run(ray_nodes, claim) -> None:
    """A worker node killed while tasks run there: the tasks (``max_retries``) are run again on the
    surviving node and return the right results; the actor (``max_restarts=1``) is restarted there,
    with fresh state, and answers calls again."""
    if os.environ.get(KILL_VAR) != "1":
        pytest.skip(f"kills a worker node of the cluster: runs only where {KILL_VAR}=1 (set by the "
                    "simulated-hosts run; on a cluster of your own, set it if you mean it)")
    ray, (here, there, *_) = ray_nodes
    tally = ray.remote(max_restarts=1, max_task_retries=-1)(Tally).options(
        scheduling_strategy=on(ray, there, soft=True), num_cpus=0).remote()
    assert ray.get(tally.call.remote(), timeout=TIMEOUT) == (1, there)
    task = ray.remote(num_cpus=1, max_retries=3)(square_after)
    values = list(range(4))
    refs = [task.options(scheduling_strategy=on(ray, there, soft=True)).remote(1.0, v) for v in values]
    time.sleep(0.3)  # the first of them is running on the doomed node
    killer = ray.remote(num_cpus=0, max_retries=0)(end_my_node).options(scheduling_strategy=on(ray, there))
    killed_at = time.perf_counter()
    with pytest.raises(ray.exceptions.RayError):
        ray.get(killer.remote(), timeout=TIMEOUT)
    assert ray.get(refs, timeout=TIMEOUT) == [v * v for v in values]
    recovered_s = time.perf_counter() - killed_at
    calls, where = ray.get(tally.call.remote(), timeout=TIMEOUT)
    assert (calls, where) == (1, here), "the actor was not restarted with fresh state on the surviving node"
    deadline = time.monotonic() + TIMEOUT
    while any(n["NodeID"] == there and n.get("Alive") for n in ray.nodes()):
        assert time.monotonic() < deadline, "the killed node is still listed alive"
        time.sleep(0.2)
    claim(f"{len(values)} tasks retried to correct results {recovered_s:.1f} s after the node was "
          f"killed; actor restarted on the surviving node")


# ---------------------------------------------------------------------------------------------
# The same claims, run here on a cluster of two simulated hosts

ACROSS_NODES = ["test_spread_tasks_land_on_every_node", "test_get_of_an_object_on_another_node_is_a_transfer",
                "test_tasks_and_an_actor_survive_a_worker_node_killed_mid_run"]


@pytest.fixture(scope="module")
def simulated_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This file's Ray claims, run once by a driver on a 2-node cluster of simulated hosts."""
    from pytest_hpcdemo.cluster import runs as cluster_runs
    from pytest_hpcdemo.cluster import simhosts

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("RAY_ADDRESS names a cluster: the claims above run on it instead")
    if os.environ.get(OPT_IN_VAR) != "1":
        pytest.skip(f"the 2-node Ray run on simulated hosts is opt-in ({OPT_IN_VAR}=1): on the loaded "
                    "2-core machine it was written on, the nodes often missed Ray's 30 s start-up limit, "
                    "and SPREAD and soft node affinity once placed nothing on the joined node")
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'pytest-hpcdemo[ray]'")
    reason = simhosts.unavailable_reason()
    if reason:
        pytest.skip(f"{reason}; on a cluster: {NODES_REASON.split(': ', 1)[1]}")
    ray = cluster_runs.ray_executable()
    if ray is None:
        pytest.skip("no `ray` command beside this Python or on PATH: pip install 'pytest-hpcdemo[ray]'")
    results = tmp_path_factory.mktemp("cluster-ray")
    args = ["-k", " or ".join(ACROSS_NODES), f"--basetemp={results / 'base'}",
            f"--hpc-budget={request.config.getoption('hpc_budget'):g}",
            f"--hpc-confidence={request.config.getoption('hpc_confidence'):g}"]
    # The nodes' own files, apart from any other Ray's /tmp/ray, on a path short enough for sockets.
    ray_tmp = Path(tempfile.mkdtemp(prefix="hpcdemo-ray-"))
    try:
        with simhosts.SimHosts(2) as hosts:
            env = {**cluster_runs.RAY_ENV, "RAY_TMPDIR": str(ray_tmp)}
            address = cluster_runs.start_ray_nodes(hosts, ray, env, NODE_START_TIMEOUT_S)
            run = cluster_runs.ray_driver_run(hosts, Path(__file__), args, results,
                                              {**env, "RAY_ADDRESS": address, KILL_VAR: "1"}, INNER_TIMEOUT_S)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    if hosts.left_over:
        pytest.fail(f"processes outlived the simulated hosts: {hosts.left_over}", pytrace=False)
    return run


@pytest.mark.timing
@pytest.mark.parametrize("inner", ACROSS_NODES)
def test_on_two_simulated_nodes(simulated_cluster, inner: str, claim) -> None:
    """Each claim above, on a Ray cluster of two simulated hosts (one CPU each)."""
    simulated_cluster.mirror(inner)
    claim(simulated_cluster.summary_line(inner))
