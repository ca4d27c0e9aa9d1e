"""Fingerprint parsers and the limits' sizing with injected /proc and /sys facts."""

from __future__ import annotations

from pathlib import Path

from pytest_hpcdemo.node import fingerprint, limits

CPUINFO_X86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"
CPUINFO_ARM = "processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd40\n"


def test_cpu_model_from_x86_and_arm_cpuinfo() -> None:
    assert fingerprint.cpu_model(CPUINFO_X86) == "AMD EPYC 9654 96-Core Processor"
    assert fingerprint.cpu_model(CPUINFO_ARM) == "0xd40"
    assert fingerprint.cpu_model("") is None


def test_physical_cores_count_smt_siblings_once() -> None:
    # 2 packages x 2 cores x 2 threads: CPUs 0-3 on package 0, 4-7 on package 1, siblings share core ids
    topology = {c: (str(c // 4), str(c % 2)) for c in range(8)}
    assert len(fingerprint.physical_core_ids(topology, range(8))) == 4
    assert len(fingerprint.physical_core_ids(topology, [0, 2])) == 1  # siblings
    assert len(fingerprint.physical_core_ids({}, [0, 1, 2])) == 3  # no topology: each CPU alone


def test_numa_nodes_from_the_node_folder() -> None:
    assert fingerprint.numa_nodes(["node0", "node1", "online", "possible", "has_cpu"]) == 2
    assert fingerprint.numa_nodes([]) == 1


def test_differences_split_result_fields_from_the_rest() -> None:
    old = {"cpu_model": "A", "governor": "performance", "blas_threads": 2}
    new = {"cpu_model": "A", "governor": "powersave", "blas_threads": 4}
    assert fingerprint.differences(old, new) == (["blas_threads"], ["governor"])


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
    assert limits.cache_bytes(tmp_path) == 32 * 2**20
    assert limits.cache_bytes(tmp_path / "missing") == 32 * 2**20  # the fallback


def test_rates_count_bytes_as_stream_does() -> None:
    assert limits.rates({"copy": 1.0, "triad": 2.0}, 1000) == {"copy": 16_000.0, "triad": 12_000.0}
