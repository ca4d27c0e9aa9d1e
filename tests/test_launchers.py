"""Launcher detection (pytest_hpcdemo.mpi.launch) in each launcher's environment, and the header's
lines of ranks by host and of a Ray cluster's nodes. MPICH's Hydra is run for real, on one host
and on two simulated hosts; Slurm's and Open MPI's variables are those their documentation lists
for a task of a step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_hpcdemo.cluster import runs as cluster_runs
from pytest_hpcdemo.cluster import simhosts
from pytest_hpcdemo.mpi.launch import Launch, launch_of, slurm_tasks_on_node
from pytest_hpcdemo.mpi.plugin import hosts_line

PRINT_LAUNCH = ("import os, socket; from pytest_hpcdemo.mpi.launch import launch_of; "
                "print(socket.gethostname(), *launch_of(os.environ), sep='|')")

# A task of `srun -N 2 -n 3 ...` on the second node (node 1), rank 2; from Slurm's srun(1) "OUTPUT
# ENVIRONMENT VARIABLES" and the mpi plugins' own variables.
SRUN_TASK = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "3", "SLURM_NPROCS": "3", "SLURM_STEP_ID": "0",
             "SLURM_STEP_NUM_TASKS": "3", "SLURM_STEP_NUM_NODES": "2", "SLURM_STEP_TASKS_PER_NODE": "2,1",
             "SLURM_TASKS_PER_NODE": "2,1", "SLURM_NODEID": "1", "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
SRUN_PMI2 = {**SRUN_TASK, "PMI_FD": "7", "PMI_JOBID": "42.0", "PMI_RANK": "2", "PMI_SIZE": "3"}
SRUN_PMIX = {**SRUN_TASK, "PMIX_RANK": "2", "PMIX_NAMESPACE": "slurm.pmix.42.0", "PMIX_SERVER_URI41": "x"}
# The batch script itself (sbatch -n 3): the job's variables, no step's.
SBATCH_SCRIPT = {"SLURM_JOB_ID": "42", "SLURM_NTASKS": "3", "SLURM_NPROCS": "3",
                 "SLURM_TASKS_PER_NODE": "2,1", "SLURM_NODEID": "0", "SLURM_PROCID": "0",
                 "SLURM_LOCALID": "0"}
# Open MPI 5 (mpirun/prterun): its own variables beside PMIx's.
OPEN_MPI = {"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
            "OMPI_COMM_WORLD_LOCAL_RANK": "1", "PMIX_RANK": "3", "PMIX_NAMESPACE": "prterun-x-1@1"}


@pytest.mark.parametrize(("environ", "expected"), [
    (SRUN_TASK, Launch("Slurm srun", 3, 2, 1)),
    (SRUN_PMI2, Launch("Slurm srun (PMI-2)", 3, 2, 1)),
    (SRUN_PMIX, Launch("Slurm srun (PMIx)", 3, 2, 1)),
    (OPEN_MPI, Launch("Open MPI", 4, 3, 2)),
    ({"PMIX_SIZE": "2", "PMIX_RANK": "1", "PMIX_LOCAL_SIZE": "2"}, Launch("PMIx", 2, 1, 2)),
    (SBATCH_SCRIPT, None),
    ({}, None),
], ids=["srun", "srun-pmi2", "srun-pmix", "open-mpi", "pmix", "sbatch-script", "none"])
def test_each_launchers_environment_is_recognised(environ: dict[str, str], expected: Launch | None) -> None:
    assert launch_of(environ) == expected


@pytest.mark.parametrize(("counts", "node", "expected"), [
    ("2(x3),1", 2, 2), ("2(x3),1", 3, 1), ("4", 0, 4), ("4", 1, None), ("2(x", 0, None), ("", 0, None),
])
def test_slurm_tasks_per_node_list_is_read(counts: str, node: int, expected: int | None) -> None:
    assert slurm_tasks_on_node(counts, node) == expected


def test_an_unreadable_slurm_count_falls_back_to_the_step_size() -> None:
    assert launch_of({**SRUN_TASK, "SLURM_STEP_TASKS_PER_NODE": "odd"}).local_size == 3  # type: ignore[union-attr]


def _mpiexec() -> str:
    found = cluster_runs.hydra_mpiexec()
    if found is None:
        pytest.skip("needs MPICH's Hydra mpiexec: pip install 'pytest-hpcdemo[mpi]' (the mpich wheel)")
    return found


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def test_hydra_on_one_host_is_recognised() -> None:
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c", PRINT_LAUNCH], capture_output=True,
                          text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    rows = sorted(line.split("|")[1:] for line in done.stdout.splitlines())
    assert rows == [["MPICH (Hydra)", "2", "0", "2"], ["MPICH (Hydra)", "2", "1", "2"]]


@pytest.mark.skipif(simhosts.unavailable_reason() is not None, reason=str(simhosts.unavailable_reason()))
def test_hydra_on_two_simulated_hosts_counts_ranks_per_host(tmp_path: Path) -> None:
    with simhosts.SimHosts(2) as hosts:
        launcher = hosts.hydra_launcher(tmp_path)
        placement = f"{hosts[0].address}:2,{hosts[1].address}:1"
        command = [_mpiexec(), "-launcher", "ssh", "-launcher-exec", str(launcher), "-hosts", placement,
                   "-n", "3", sys.executable, "-c", PRINT_LAUNCH]
        done = hosts.run(hosts[0], command, capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stderr
    rows = sorted(line.split("|") for line in done.stdout.splitlines())
    assert rows == [["simhost1", "MPICH (Hydra)", "3", "0", "2"],
                    ["simhost1", "MPICH (Hydra)", "3", "1", "2"],
                    ["simhost2", "MPICH (Hydra)", "3", "2", "1"]]


def test_header_groups_ranks_by_host() -> None:
    ranks = [("node-a", 8), ("node-a", 8), ("node-b", 4), ("node-a", 8)]
    assert hosts_line(ranks) == ("hpcdemo: mpi ranks by host (2 hosts): node-a: ranks 0-1, 3 on 8 usable "
                                 "cores; node-b: rank 2 on 4 usable cores")
    assert hosts_line([("vm", 1)]) == "hpcdemo: mpi ranks by host (1 host): vm: rank 0 on 1 usable core"


def test_ray_header_lists_each_node_and_its_resources() -> None:
    from pytest_hpcdemo.ray.cluster import RayCluster

    nodes = {"10.213.0.1": {"CPU": 1.0, "object_store_memory": 150 * 2**20},
             "10.213.0.2": {"CPU": 2.0, "object_store_memory": 300 * 2**20}}
    cluster = RayCluster(local=False, address="10.213.0.1:6379", start_s=1.0,
                         resources={"CPU": 3.0, "object_store_memory": 450 * 2**20}, nodes=2, worker_nice=15,
                         roots=[], node_resources=nodes)
    assert cluster.describe().endswith("2 nodes, workers at nice 15; nodes: 10.213.0.1 (1 CPUs, 150 MiB), "
                                       "10.213.0.2 (2 CPUs, 300 MiB)")
    one = RayCluster(local=True, address="x", start_s=1.0, resources={"CPU": 2.0}, nodes=1, worker_nice=0,
                     roots=[], node_resources={"127.0.0.1": {"CPU": 2.0}})
    assert "nodes:" not in one.describe()
