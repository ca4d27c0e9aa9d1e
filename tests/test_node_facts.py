"""Fingerprint parsers and the limits' sizing with injected /proc and /sys facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_hpcdemo.core import procfs
from pytest_hpcdemo.node import fingerprint, limits

CPUINFO_X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"
CPUINFO_ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd40\n"


def test_cpu_model_from_x86_and_arm_cpuinfo() -> None:
    assert fingerprint.cpu_model(CPUINFO_X86) == "AMD EPYC 9654 96-Core Processor"
    assert fingerprint.cpu_model(CPUINFO_ARM) == "0xd40"
    assert fingerprint.cpu_model("") is None


def test_numa_nodes_from_the_node_folder() -> None:
    assert fingerprint.numa_nodes(["node0", "node1", "online", "possible", "has_cpu"]) == 2
    assert fingerprint.numa_nodes([]) == 1


def test_differences_split_result_fields_from_the_rest() -> None:
    old = {"cpu_model": "A", "governor": "performance", "blas_threads": 2}
    new = {"cpu_model": "A", "governor": "powersave", "blas_threads": 4}
    governor = "governor 'performance' vs 'powersave'"
    assert fingerprint.differences(old, new) == (["blas_threads 2 vs 4"], [governor])
    unknown = {**new, "blas_threads": None, "cpu_mhz": 3000.0}  # not known in one run; a reading
    assert fingerprint.differences(old, unknown) == ([], [governor])


def test_mpi_transport_and_python_are_in_the_fingerprint() -> None:
    assert fingerprint.mpi_transport({}) == "library default"
    assert fingerprint.mpi_transport({"UCX_TLS": "tcp,self", "FI_PROVIDER": "tcp", "HOME": "/root"}) == \
        "UCX_TLS=tcp,self FI_PROVIDER=tcp"
    assert fingerprint.python().startswith("CPython 3.")


def test_this_machine_fingerprint_has_every_field() -> None:
    fp = fingerprint.fingerprint()
    assert set(fingerprint.RESULT_FIELDS) <= set(fp)
    assert fp["physical_cores"] <= fp["logical_cores"]
    assert "logical cores" in fingerprint.line(fp)


def test_stream_arrays_exceed_the_caches_within_the_memory() -> None:
    cache, gib = 32 * 2**20, 2**30
    one = limits.stream_elements(1, 24 * gib, cache)
    assert 3 * 8 * one >= 8 * cache - 24  # three arrays span eight caches (to an element)
    per_128 = limits.stream_elements(128, 512 * gib, cache)
    assert 128 * 3 * 8 * per_128 >= 8 * cache - 128 * 24 and per_128 >= limits.MIN_ELEMENTS
    assert 3 * 8 * limits.stream_elements(1, 2 * gib, 2 * gib) <= 2 * gib // 16  # a sixteenth at most


def test_cache_size_from_sys(tmp_path: Path) -> None:
    for index, size in (("index0", "48K"), ("index2", "1024K"), ("index3", "32768K")):
        (tmp_path / index).mkdir()
        (tmp_path / index / "size").write_text(size + "\n")
    assert procfs.cache_sizes(tmp_path) == ["48K", "1024K", "32768K"]
    assert limits.cache_bytes(procfs.cache_sizes(tmp_path)) == 32 * 2**20
    assert limits.cache_bytes(["2M", "40M"]) == 40 * 2**20
    assert limits.cache_bytes(procfs.cache_sizes(tmp_path / "missing")) == 32 * 2**20  # the fallback


def test_rates_count_bytes_as_stream_does() -> None:
    assert limits.rates({"copy": 1.0, "triad": 2.0}, 1000) == {"copy": 16_000.0, "triad": 12_000.0}


def test_limits_state_bandwidth_as_a_share_of_linear_and_points_as_a_share_of_the_pool_ideal() -> None:
    """Injected figures of a 128-core node: its all-core copy is a quarter of 128 one-core copies;
    the full-node point states its fraction of the pool ideal, a smaller point states none."""
    from pytest_hpcdemo.node import scaling

    node = limits.Limits(processes=128, copy_one=10e9, triad_one=9e9, copy_all=320e9, triad_all=288e9,
                         python_one=5e6, python_all=500e6, elements_one=1, elements_all=1, foreign_load=0.0)
    assert node.bandwidth_share("copy") == pytest.approx(0.25)
    assert node.as_dict()["triad_share_of_linear"] == pytest.approx(0.25)
    assert "320.0 GB/s on 128 (25% of 128 x 1 core)" in node.lines()[0]
    full = {"workers": 128, "speedup": 80.0}
    assert scaling.of_the_pool_ideal(full, node) == ("speedup 80.00 = 80% of the process-pool ideal 100.00x "
                                                     "measured this session")
    assert full["fraction_of_pool_ideal"] == pytest.approx(0.8) and full["pool_ideal"] == pytest.approx(100)
    half = {"workers": 64, "speedup": 50.0}
    assert scaling.of_the_pool_ideal(half, node) == "" and "fraction_of_pool_ideal" not in half
