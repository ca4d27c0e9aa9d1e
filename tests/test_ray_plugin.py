"""The Ray part of the plugin: the session cluster starts only for Ray tests, is stopped with no
process left behind, is skipped under xdist, and works against a ``ray start --head`` cluster
through RAY_ADDRESS. The last two start real clusters in subprocesses (about 15 s each)."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_hpcdemo.core.hardware import detect_cached, package_version
from pytest_hpcdemo.ray import cluster as rc
from pytest_hpcdemo.ray.plugin import XDIST_REASON

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
START_TIMEOUT = 120.0
STOP_TIMEOUT = 45.0  # ray start drains the node for up to 30 s on SIGTERM

needs_ray = pytest.mark.skipif(package_version("ray") is None,
                               reason="Ray is not installed: pip install 'pytest-hpcdemo[ray]'")

RAY_TEST = """
import json, os
from pathlib import Path
import pytest
import ray  # before the cluster starts, and so before the plugin sets Ray's environment
from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.ray.cluster import driver_port, listeners

@pytest.mark.ray
def test_cluster_runs_a_task(ray_cluster):
    pid, _ = ray.get(ray.remote(workloads.worker_identity).remote(0), timeout=60)
    assert pid != os.getpid()
    port = driver_port()
    found = [s for s in listeners([os.getpid()]) if s.port == port]
    found += listeners([p.pid for p in ray_cluster.processes()])
    assert len(found) >= 3 and all(s.loopback for s in found), found
    procs = [[p.pid, p.start] for p in ray_cluster.processes()]
    Path(os.environ["HPC_RAY_PIDS"]).write_text(json.dumps(procs))

def test_after_the_last_ray_test():
    import ray
    from pytest_hpcdemo.ray.cluster import Proc, wait_gone
    assert not ray.is_initialized()
    procs = [Proc(pid, start) for pid, start in json.loads(Path(os.environ["HPC_RAY_PIDS"]).read_text())]
    assert procs and not wait_gone(procs, timeout=1)
"""


@pytest.mark.parametrize(
    "text, address, port",
    [
        ("0100007F:1F90", "127.0.0.1", 8080),
        ("00000000:0050", "0.0.0.0", 80),
        ("0000000000000000FFFF00000100007F:9C45", "::ffff:7f00:1", 40005),
        ("00000000000000000000000001000000:0016", "::1", 22),
    ],
)
def test_proc_net_addresses_are_decoded(text: str, address: str, port: int) -> None:
    # str() of an IPv4-mapped address is "::ffff:127.0.0.1" from Python 3.13 on: compare addresses.
    assert rc._hex_address(text) == (str(ipaddress.ip_address(address)), port)


def test_loopback_judgement() -> None:
    assert rc.Listener(1, "tcp6", "::ffff:7f00:1", 1).loopback
    assert rc.Listener(1, "tcp", "127.0.0.1", 1).loopback
    assert not rc.Listener(1, "tcp", "0.0.0.0", 1).loopback
    assert not rc.Listener(1, "tcp6", "::", 1).loopback
    assert rc._is_loopback_address("127.0.0.1:6379") and rc._is_loopback_address("localhost:6379")
    assert not rc._is_loopback_address("10.0.0.5:6379")


@needs_ray
def test_collect_only_and_xdist_start_no_cluster(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(RAY_TEST)
    result = pytester.runpytest_subprocess("--collect-only", "-q")
    assert "ray local cluster" not in str(result.stdout)
    result = pytester.runpytest_subprocess("-n", "2", "-rs", "-k", "test_cluster_runs_a_task")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"*{XDIST_REASON[:60]}*"])
    assert "ray local cluster" not in str(result.stdout)


@needs_ray
def test_local_cluster_is_stopped_after_the_last_ray_test_with_no_process_left(pytester: pytest.Pytester,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pids_file = pytester.path / "pids.json"
    monkeypatch.setenv("HPC_RAY_PIDS", str(pids_file))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    pytester.makepyfile(RAY_TEST)
    result = pytester.runpytest_subprocess(timeout=START_TIMEOUT)
    result.assert_outcomes(passed=2)  # the second test finds the cluster stopped after the first
    result.stdout.fnmatch_lines([
        "hpcdemo: ray local cluster on 127.0.0.1, from the first ray test to the last: * CPUs, *",
        "hpcdemo: ray local cluster on 127.0.0.1 (started in * s): * CPUs, *workers at nice 0",
        "hpcdemo: ray: local cluster stopped in * s; 0 of * processes left after * s (none)",
    ])
    procs = [rc.Proc(pid, start) for pid, start in json.loads(pids_file.read_text())]
    assert len(procs) >= 3  # GCS, raylet, a worker at least
    assert not rc.wait_gone(procs), "Ray processes outlived the session"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A cluster started by ``ray start --head --block`` on 127.0.0.1 in a private temp dir, ended by
    SIGTERM to that command (``ray stop`` would stop every Ray process on the machine, other users'
    too); none of its processes may outlive the test."""
    temp = Path(tempfile.mkdtemp(prefix="hpcray-"))  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
           "--node-ip-address=127.0.0.1", f"--port={port}", f"--ray-client-server-port={_free_port()}",
           f"--dashboard-port={_free_port()}", "--include-dashboard=false", "--disable-usage-stats",
           f"--num-cpus={detect_cached().usable_cores}", f"--object-store-memory={rc.OBJECT_STORE_BYTES}",
           f"--temp-dir={temp}"]
    log = temp / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen(cmd, env={**os.environ, **rc.LOCAL_ENV}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None, f"ray start failed:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"ray start did not finish:\n{log.read_text()}"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        procs = rc.processes_under([head.pid])
        head.terminate()  # ray start drains the node (well under a second when idle), then ends the rest
        try:
            head.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # then no process of it may survive the test
            for proc in procs:
                if proc.alive():
                    os.kill(proc.pid, signal.SIGKILL)
            head.wait(timeout=STOP_TIMEOUT)
        left = rc.wait_gone(procs)
        subprocess.run(["rm", "-rf", str(temp)], check=False, timeout=60)
        assert not left, f"the head left {left}"


@needs_ray
def test_ray_address_runs_the_ray_tests_on_an_existing_cluster(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ray_head: str) -> None:
    """The Ray chapter's semantics tests and the executor conformance suite pass against a cluster
    started by ``ray start --head``; the listener test skips (that cluster is not ours)."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head)
    selected = ("(test_ray and (order or cancel or exception or actor or listener)) "
                "or (test_pools and ray and (as_completed or map_yields or exception))")
    result = pytester.runpytest_subprocess(str(BENCHMARKS / "test_ray.py"), str(BENCHMARKS / "test_pools.py"),
                                           "-k", selected, "-rs", timeout=START_TIMEOUT)
    result.assert_outcomes(passed=8, skipped=1)
    result.stdout.fnmatch_lines([
        f"hpcdemo: ray cluster at RAY_ADDRESS={ray_head} (connected in * s): * CPUs, *1 node*",
        f"hpcdemo: ray: disconnected from {ray_head} in * s; that cluster keeps running",
        "*RAY_ADDRESS names a cluster this session did not start*",
    ])
