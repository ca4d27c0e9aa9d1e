"""Hardware detection from synthetic inputs: cgroup files, launcher variables, GIL state."""

from __future__ import annotations

import sys

import pytest

from pytest_hpcdemo import hardware


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
