"""A pytest selection run as a job on simulated hosts, and its outcomes read back test by test.

The cluster benchmarks run their claims in an inner pytest: an MPI job started by MPICH's Hydra
across the hosts, or a driver on one host of a Ray cluster spread over them. The inner run writes
JUnit XML (outcome and skip or failure message of each test) and pytest-benchmark's JSON (the
figures); the outer test that started it reports each inner test as its own outcome.

Standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .simhosts import SimHosts, end_processes

OUTPUT_TAIL = 4000
VERDICT_WORDS = ("HOLDS", "FAILS", "INCONCLUSIVE")


@dataclass(frozen=True)
class Outcome:
    outcome: str  # passed, failed, skipped
    message: str = ""


@dataclass
class InnerRun:
    """What an inner pytest run left: its exit status and output, each test's outcome (by test
    function name) and pytest-benchmark's ``extra_info`` of each test that saved one."""

    returncode: int
    output: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    extra_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    def tail(self) -> str:
        return self.output[-OUTPUT_TAIL:]

    def mirror(self, name: str) -> dict[str, Any]:
        """End the calling test as the inner test ``name`` ended; its figures when it passed."""
        found = self.outcomes.get(name)
        if found is None:
            pytest.fail(f"the inner run (exit status {self.returncode}) reported no outcome for {name}:\n"
                        f"{self.tail()}", pytrace=False)
        if found.outcome == "failed":
            pytest.fail(f"on the simulated hosts: {found.message}", pytrace=False)
        if found.outcome == "skipped":
            pytest.skip(f"on the simulated hosts: {found.message}")
        return self.extra_info.get(name, {})


    def summary_line(self, name: str) -> str:
        """The inner run's line for ``name`` in its claim summary (verdict words stripped)."""
        for line in self.output.splitlines():
            words = line.split(maxsplit=2)
            if len(words) == 3 and words[0] in VERDICT_WORDS and _name(words[1]) == name:
                return f"{name}: {words[2]}"
        return name


def _name(nodeid_or_case: str) -> str:
    return nodeid_or_case.rsplit("::", 1)[-1].rsplit(".", 1)[-1]


def read_junit(path: Path) -> dict[str, Outcome]:
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "") or (child.text or "")
            elif child.tag == "skipped" and outcome != "failed":
                outcome, message = "skipped", child.get("message", "")
        outcomes[_name(case.get("name", ""))] = Outcome(outcome, message)
    return outcomes


def read_extra_info(path: Path) -> dict[str, dict[str, Any]]:
    entries = json.loads(path.read_text()).get("benchmarks", [])
    return {_name(entry["fullname"]): entry.get("extra_info", {}) for entry in entries}


def inner_pytest(test_file: Path, results: Path, args: Sequence[str],
                 rank_var: str | None = None) -> list[str]:
    """The inner run's command: ``test_file`` alone, JUnit XML and benchmark JSON under ``results``
    (one JUnit file per rank, named after ``rank_var``, where every rank writes one)."""
    junit = f"{results}/junit-${rank_var}.xml" if rank_var else f"{results}/junit.xml"
    line = (f'exec "{sys.executable}" -m pytest "{test_file}" -p no:cacheprovider -q -rA '
            f'--junitxml="{junit}" --benchmark-json="{results}/benchmarks.json" "$@"')
    return ["sh", "-c", line, "inner-pytest", *args]


def collect(done: subprocess.CompletedProcess[str], results: Path, junit: str) -> InnerRun:
    run = InnerRun(done.returncode, done.stdout)
    if (results / junit).exists():
        run.outcomes = read_junit(results / junit)
    if (results / "benchmarks.json").exists():
        run.extra_info = read_extra_info(results / "benchmarks.json")
    return run


def hydra_mpiexec() -> str | None:
    """MPICH's Hydra ``mpiexec`` beside this Python (the mpich wheel's) or on PATH, else None."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        return None
    try:
        version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return found if "HYDRA" in version else None


def mpi_job(hosts: SimHosts, ranks_per_host: Sequence[int], test_file: Path, args: Sequence[str],
            results: Path, env: Mapping[str, str], timeout: float) -> InnerRun:
    """``test_file`` run by ``sum(ranks_per_host)`` ranks placed on the hosts in order; mpiexec
    runs on the first host and reaches the others through Hydra's ssh launcher, pointed at a script
    that enters their namespaces. A job past ``timeout`` is ended with the hosts."""
    mpiexec = hydra_mpiexec()
    if mpiexec is None:
        pytest.skip("needs MPICH's Hydra mpiexec: pip install 'pytest-hpcdemo[mpi]' (the mpich wheel)")
    launcher = hosts.hydra_launcher(results)
    placement = ",".join(f"{host.address}:{n}" for host, n in zip(hosts, ranks_per_host, strict=True))
    command = [mpiexec, "-launcher", "ssh", "-launcher-exec", str(launcher), "-hosts", placement,
               "-n", str(sum(ranks_per_host)),
               *inner_pytest(test_file, results, args, rank_var="PMI_RANK")]
    return _run(hosts, command, results, "junit-0.xml", env, timeout)


def _run(hosts: SimHosts, command: Sequence[str], results: Path, junit: str, env: Mapping[str, str],
         timeout: float) -> InnerRun:
    full_env = {**os.environ, **env}
    full_env.pop("PYTEST_ADDOPTS", None)
    full_env.pop("PYTEST_XDIST_WORKER", None)
    try:
        done = hosts.run(hosts[0], command, capture_output=True, text=True, env=full_env, timeout=timeout,
                         stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"the run on the simulated hosts took more than {timeout:g} s and was ended:\n"
                    f"{out[-OUTPUT_TAIL:]}", pytrace=False)
    done.stdout = (done.stdout or "") + (done.stderr or "")
    return collect(done, results, junit)


# ---------------------------------------------------------------------------------------------
# Ray: a head node on the first host, a worker node on each other host, the driver beside the head

RAY_PORT = 6379
START_TRIES = 2  # Ray gives a node 30 s to register: a loaded machine can miss that once
RAY_OBJECT_STORE_BYTES = 150 * 2**20
RAY_AGENT_PORTS = {"metrics-export-port": 20001, "dashboard-agent-listen-port": 20002,
                   "dashboard-agent-grpc-port": 20003, "runtime-env-agent-port": 20004}
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",  # every node and the driver: the token in ~/.ray, shared by the hosts
    "RAY_agent_register_timeout_ms": "120000",  # a loaded machine starts a node's agents slowly
    "RAY_raylet_start_wait_time_s": "120",
    "RAY_health_check_period_ms": "1000",  # a killed node is declared dead within seconds
    "RAY_health_check_failure_threshold": "3",
}


def ray_executable() -> str | None:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")


def start_ray_nodes(hosts: SimHosts, ray: str, env: Mapping[str, str], timeout: float) -> str:
    """A head node on ``hosts[0]`` and a worker node on each other host, one CPU each, no dashboard,
    each node's files under its own temporary directory; the head's address. A node that does not
    start skips the test with Ray's words (a loaded machine can time Ray's own start-up out)."""
    head = hosts[0]
    address = f"{head.address}:{RAY_PORT}"
    # Fixed agent ports (each host has its own port space): the raylet then need not wait for its
    # agents to write theirs, which on a loaded machine times its start-up out.
    common = ["--num-cpus=1", f"--object-store-memory={RAY_OBJECT_STORE_BYTES}", "--disable-usage-stats",
              *(f"--{option}={port}" for option, port in RAY_AGENT_PORTS.items())]
    for host in hosts:
        role = (["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if host is head
                else [f"--address={address}"])
        command = [ray, "start", *role, f"--node-ip-address={host.address}", *common]
        why = ""
        for _ in range(START_TRIES):
            end_processes(host.netns)  # a failed try's processes
            try:
                done = hosts.run(host, command, capture_output=True, text=True, env={**os.environ, **env},
                                 timeout=timeout, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                why = f"not within {timeout:g} s"
                continue
            if done.returncode == 0:
                break
            why = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        else:
            pytest.skip(f"the Ray node on {host.hostname} did not start in {START_TRIES} tries (load "
                        f"average {os.getloadavg()[0]:.1f}): {why}")
    return address


def ray_driver_run(hosts: SimHosts, test_file: Path, args: Sequence[str], results: Path,
                   env: Mapping[str, str], timeout: float) -> InnerRun:
    """``test_file`` run by a driver on the head's host, connected through RAY_ADDRESS."""
    return _run(hosts, inner_pytest(test_file, results, args), results, "junit.xml", env, timeout)
