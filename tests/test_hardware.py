"""Hardware detection from synthetic inputs: cgroup files, launcher variables, GIL state."""

from __future__ import annotations

import sys

import pytest

from pytest_hpcdemo.core import hardware


@pytest.mark.parametrize(
    "cpu_max, quota, period, expected",
    [
        ("max 100000", None, None, None),
        ("150000 100000", None, None, 1.5),
        ("200000 100000", None, None, 2.0),
        (None, "-1", "100000", None),
        (None, "50000", "100000", 0.5),
        (None, None, None, None),
    ],
)
def test_parse_cgroup_quota(cpu_max, quota, period, expected) -> None:
    assert hardware.parse_cgroup_quota(cpu_max, quota, period) == expected


@pytest.mark.parametrize(
    "affinity, quota, expected",
    [(8, None, 8), (8, 2.0, 2), (8, 1.5, 1), (8, 0.5, 1), (2, 16.0, 2)],
)
def test_usable_cores_takes_the_tighter_of_affinity_and_quota(affinity, quota, expected) -> None:
    assert hardware.usable_cores_from(affinity, quota) == expected


def test_detect_mpi_outside_a_launcher() -> None:
    info = hardware.detect_mpi({})
    assert not info.launched and info.world_size == 1 and info.rank == 0


@pytest.mark.parametrize(
    "env, launcher",
    [
        ({"PMI_SIZE": "4", "PMI_RANK": "2"}, "MPICH (Hydra)"),
        ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "2"}, "Open MPI"),
    ],
)
def test_detect_mpi_under_a_launcher(env, launcher) -> None:
    info = hardware.detect_mpi(env)
    assert info.launched and info.launcher == launcher
    assert (info.world_size, info.rank) == (4, 2)


def test_gil_state_on_this_interpreter() -> None:
    free_threaded, enabled = hardware.gil_state()
    assert isinstance(free_threaded, bool) and isinstance(enabled, bool)
    if not free_threaded:
        assert enabled


def test_installed_versions_reads_dist_info_without_imports() -> None:
    assert hardware.package_version("pytest") == pytest.__version__
    assert hardware.package_version("Pytest_Benchmark") is not None  # names are normalised
    assert hardware.package_version("no-such-distribution-here") is None


def test_gpu_reasons_say_what_is_missing() -> None:
    assert "CuPy is not installed" in hardware.GpuInfo(None, None).missing_reason
    assert "no NVIDIA driver" in hardware.GpuInfo("14.0", None).missing_reason
    assert "no GPU device" in hardware.GpuInfo("14.0", "580.1").missing_reason
    assert hardware.GpuInfo("14.0", "580.1", ("H100",)).missing_reason is None


def test_detect_never_raises_and_counts_cores() -> None:
    hw = hardware.detect("spawn")
    assert 1 <= hw.usable_cores <= hw.logical_cores
    assert hw.python == sys.version.split()[0]
    assert hw.start_method == "spawn"
    assert hw.gpu is not None and hw.mpi is not None


def fake_topology(root, siblings: dict[int, str], file: str = "core_cpus_list"):
    for cpu, text in siblings.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / file).write_text(text + "\n")
    return root


@pytest.mark.parametrize("file", ["core_cpus_list", "thread_siblings_list"])
def test_smt_siblings_share_a_physical_core(tmp_path, file) -> None:
    """4 CPUs on 2 cores (0,2 and 1,3 are siblings, as Intel numbers them)."""
    sys_cpu = fake_topology(tmp_path, {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}, file)
    assert hardware.physical_cores_in({0, 1, 2, 3}, sys_cpu) == 2
    assert hardware.physical_cores_in({0, 1}, sys_cpu) == 2  # one thread of each core
    assert hardware.physical_cores_in({0, 2}, sys_cpu) == 1  # both threads of one core


def test_cpus_without_topology_count_as_cores(tmp_path) -> None:
    sys_cpu = fake_topology(tmp_path, {0: "0-1", 1: "0-1"})
    assert hardware.physical_cores_in({0, 1, 2}, sys_cpu) == 2  # cpu2's topology is missing
    assert hardware.parse_cpu_list("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}


def hardware_with(affinity: int, physical: int, quota: float | None) -> hardware.Hardware:
    return hardware.Hardware(
        usable_cores=hardware.usable_cores_from(affinity, quota), logical_cores=affinity,
        affinity_cores=affinity,
        cgroup_quota=quota, memory_bytes=None, free_threaded_build=False, gil_enabled=True, python="3",
        start_method="spawn", physical_cores=physical)


@pytest.mark.parametrize(
    "affinity, physical, quota, cpu_bound, smt",
    [(4, 2, None, 2, True), (4, 4, None, 4, False), (8, 4, 3.0, 3, True), (4, 2, 1.5, 1, True),
     (2, 0, None, 2, False)],
)
def test_cpu_bound_cores_are_physical_cores_cut_by_a_quota(affinity, physical, quota, cpu_bound, smt) -> None:
    hw = hardware_with(affinity, physical, quota)
    assert hw.cpu_bound_cores == cpu_bound and hw.smt_siblings is smt
    assert hw.as_dict()["cpu_bound_cores"] == cpu_bound


def test_the_header_says_when_usable_cores_are_smt_siblings() -> None:
    from pytest_hpcdemo.report.claims import header_lines

    assert "SMT siblings: 4 CPUs on 2 physical cores, CPU-bound claims count 2" in \
        header_lines(hardware_with(4, 2, None), "spawn")[0]
    assert "SMT" not in header_lines(hardware_with(4, 4, None), "spawn")[0]


def test_this_machine_has_physical_cores_within_its_affinity() -> None:
    hw = hardware.detect()
    assert 1 <= hw.physical_cores <= hw.affinity_cores
    assert 1 <= hw.cpu_bound_cores <= hw.usable_cores
