"""MPI across hosts: what changes when the ranks are on different machines.

Ranks on one host talk through shared memory; ranks on different hosts through the network. The
claims below need both at once, so they need ranks on two hosts, two of them on one host:
``mpirun -f hosts -n 3 pytest -m mpi benchmarks/test_cluster_mpi.py`` on a cluster (docs/cluster.md),
skipped with that reason on one host. ``pytest benchmarks`` runs them itself, outside any launcher,
on two simulated hosts (network namespaces, pytest_hpcdemo.cluster.simhosts) where the machine allows it:
MPICH's Hydra starts its proxy on the second host through a launcher script, and UCX is limited to
TCP, since namespaces share the machine's memory and UCX would otherwise see through them.
Each claim compares two paths in the same job, and the C loops of benchmarks/c/pingpong.c give
the limit of each path.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import test_mpi
from test_mpi import LARGE, REPS, SMALL, PingPong

from pytest_hpcdemo.core.measure import at_least

HOSTS_REASON = ("needs ranks on 2 hosts, 2 of them on one host (shared memory and network in one job): "
                "run: mpirun -f hosts -n 3 pytest -m mpi benchmarks/test_cluster_mpi.py (docs/cluster.md)")
# UCX would move messages between namespaces of one machine through shared memory; on TCP they
# cross the network stack as between hosts. MPICH's own shared memory still serves ranks of one host.
SIMULATED_NETWORK_ENV = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "eth0", "MPIR_CVAR_CH4_NETMOD": "ucx"}
RANKS_PER_HOST = (2, 1)
c_pingpong = test_mpi.c_pingpong  # the fixture that builds benchmarks/c/pingpong.c, here too
INNER_TIMEOUT_S = 240.0


class Paths(NamedTuple):
    """Two orderings of the job's ranks: rank 0 then a rank on its host (shared memory), and rank 0
    then a rank on another host (network). PingPong runs between ranks 0 and 1 of each."""

    shared_memory: Any
    network: Any
    hosts: dict[str, list[int]]


def hosts_of(comm: Any) -> dict[str, list[int]]:
    """Ranks by host (processor name), in rank order."""
    from mpi4py import MPI

    by_host: dict[str, list[int]] = {}
    for rank, name in enumerate(comm.allgather(MPI.Get_processor_name())):
        by_host.setdefault(name, []).append(rank)
    return by_host


@pytest.fixture
def paths(comm: Any) -> Any:
    by_host = hosts_of(comm)
    mine = next(ranks for ranks in by_host.values() if 0 in ranks)
    other = next((ranks for ranks in by_host.values() if 0 not in ranks), None)
    if other is None or len(mine) < 2:
        pytest.skip(f"{HOSTS_REASON}; this run: "
                    + ", ".join(f"{host}: {len(ranks)} ranks" for host, ranks in by_host.items()))

    def first(partner: int) -> Any:
        return comm.Split(0, key=0 if comm.Get_rank() == 0 else 1 if comm.Get_rank() == partner else 2)

    made = Paths(first(mine[1]), first(other[0]), by_host)
    yield made
    made.shared_memory.Free()
    made.network.Free()


@pytest.mark.mpi(min_size=3)
def test_mpi_tmp_path_is_one_directory_for_ranks_on_every_host(comm, paths, mpi_tmp_path: Path) -> None:
    """``mpi_tmp_path`` is one directory for every rank of every host (under a ``--basetemp`` that
    all hosts share): what one rank writes there, the others read."""
    (mpi_tmp_path / f"rank{comm.Get_rank()}").write_text(os.uname().nodename)
    comm.Barrier()
    written = {p.name: p.read_text() for p in mpi_tmp_path.iterdir()}
    assert sorted(written) == sorted(f"rank{r}" for r in range(comm.Get_size()))
    assert len(set(written.values())) == len(paths.hosts)


@pytest.mark.mpi(min_size=3)
def test_shared_memory_latency_beats_the_network(paths, mpi_benchmark) -> None:
    """An 8 B ping-pong between two ranks of one host (shared memory) takes less than half the time
    of one between hosts: each network message also passes through the sender's and the receiver's
    network stacks, each a system call and a wake-up at least as costly as the shared-memory hop."""
    near, far = PingPong(paths.shared_memory, SMALL), PingPong(paths.network, SMALL)
    figures = mpi_benchmark.compare(far.buffer, near.buffer, [at_least("speedup", 2.0)], cores_needed=2,
                                    name="8 B ping-pong: same host vs across hosts")
    figures["shared_memory_latency_us"] = near.latency(figures["candidate_median_s"]) * 1e6
    figures["network_latency_us"] = far.latency(figures["baseline_median_s"]) * 1e6


@pytest.mark.mpi(min_size=3)
def test_shared_memory_bandwidth_beats_the_network(paths, mpi_benchmark) -> None:
    """A window of 4 MiB messages moves faster between two ranks of one host than between hosts:
    shared memory copies each byte once in and once out; the network path makes the same copies
    into and out of socket buffers and adds the protocol's per-segment work, so it cannot be faster
    (claimed: 1.2x, the segments' work being at least a fifth of the copies')."""
    near, far = PingPong(paths.shared_memory, LARGE), PingPong(paths.network, LARGE)
    figures = mpi_benchmark.compare(far.buffer_window, near.buffer_window, [at_least("speedup", 1.2)],
                                    cores_needed=2, name="4 MiB window: same host vs across hosts")
    figures["shared_memory_bandwidth_MBps"] = near.bandwidth(figures["candidate_median_s"]) / 1e6
    figures["network_bandwidth_MBps"] = far.bandwidth(figures["baseline_median_s"]) / 1e6


@pytest.mark.mpi(min_size=3)
def test_mpi4py_latency_across_hosts_within_3x_of_c(paths, mpi_benchmark, c_pingpong) -> None:
    """Across hosts, mpi4py's 8 B ``Send``/``Recv`` ping-pong takes less than 3x the C loop's time
    (same job, same path): Python's cost per message stays of the order of the network latency."""
    pp = PingPong(paths.network, SMALL)
    handle, address = paths.network.py2f(), pp.buf.ctypes.data
    figures = mpi_benchmark.compare(lambda: c_pingpong.hpcdemo_pingpong(handle, address, SMALL, REPS),
                                    pp.buffer, [at_least("speedup", 1 / 3)], cores_needed=2,
                                    name="8 B ping-pong across hosts: mpi4py vs C")
    figures["c_latency_us"] = pp.latency(figures["baseline_median_s"]) * 1e6
    figures["mpi4py_latency_us"] = pp.latency(figures["candidate_median_s"]) * 1e6


@pytest.mark.mpi(min_size=3)
def test_mpi4py_bandwidth_across_hosts_within_0_7x_of_c(paths, mpi_benchmark, c_pingpong) -> None:
    """Across hosts, mpi4py's window of 4 MiB ``Isend``/``Irecv`` reaches at least 0.7x the C
    window's bandwidth: the array's memory goes to MPI without copies, the network sets the pace."""
    pp = PingPong(paths.network, LARGE)
    handle, address = paths.network.py2f(), pp.buf.ctypes.data
    figures = mpi_benchmark.compare(lambda: c_pingpong.hpcdemo_window(handle, address, LARGE, pp.window),
                                    pp.buffer_window, [at_least("speedup", 0.7)], cores_needed=2,
                                    name="4 MiB window across hosts: mpi4py vs C")
    figures["c_bandwidth_MBps"] = pp.bandwidth(figures["baseline_median_s"]) / 1e6
    figures["mpi4py_bandwidth_MBps"] = pp.bandwidth(figures["candidate_median_s"]) / 1e6


# ---------------------------------------------------------------------------------------------
# The same claims, run here on two simulated hosts (outside any MPI launcher)

ACROSS_HOSTS = [name for name, fn in list(globals().items()) if name.startswith("test_")
                and inspect.isfunction(fn) and any(m.name == "mpi" for m in getattr(fn, "pytestmark", []))]


@pytest.fixture(scope="module")
def simulated_job(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """This file's MPI claims, run once as a job of 3 ranks on 2 simulated hosts (2 + 1)."""
    from pytest_hpcdemo.cluster import runs as cluster_runs
    from pytest_hpcdemo.cluster import simhosts
    from pytest_hpcdemo.mpi.launch import launch_of

    if launch_of(os.environ) is not None:
        pytest.skip("runs the cluster job itself: start it outside any MPI launcher (pytest benchmarks)")
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'pytest-hpcdemo[mpi]'")
    reason = simhosts.unavailable_reason()
    if reason:
        pytest.skip(f"{reason}; on a cluster: {HOSTS_REASON.split('run: ')[1]}")
    results = tmp_path_factory.mktemp("cluster-mpi")
    budget = request.config.getoption("hpc_budget")
    args = ["-m", "mpi", f"--basetemp={results / 'base'}", f"--hpc-budget={budget:g}",
            f"--hpc-confidence={request.config.getoption('hpc_confidence'):g}"]
    with simhosts.SimHosts(len(RANKS_PER_HOST)) as hosts:
        run = cluster_runs.mpi_job(hosts, RANKS_PER_HOST, Path(__file__), args, results,
                                   SIMULATED_NETWORK_ENV, INNER_TIMEOUT_S)
    if hosts.left_over:
        pytest.fail(f"processes outlived the simulated hosts: {hosts.left_over}", pytrace=False)
    return run


@pytest.mark.timing
@pytest.mark.parametrize("inner", ACROSS_HOSTS)
def test_on_two_simulated_hosts(simulated_job, inner: str, claim) -> None:
    """Each claim above, measured on two simulated hosts (network namespaces, 2 ranks + 1)."""
    simulated_job.mirror(inner)
    claim(simulated_job.summary_line(inner))
