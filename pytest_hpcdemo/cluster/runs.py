"""A pytest selection run as a job on simulated hosts, and its outcomes read back test by test.

The cluster benchmarks run their claims in an inner pytest: an MPI job started by MPICH's Hydra
across the hosts, or a driver on one host of a Ray cluster spread over them. The inner run writes
JUnit XML (outcome and skip or failure message of each test) and pytest-benchmark's JSON (the
figures); the outer test that started it reports each inner test as its own outcome.

Module-level imports: the standard library, pytest and this package (no engine: MPI and Ray run in
the inner processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..core.hardware import beside_python
from .simhosts import SimHost, SimHosts, end_processes

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
        """End the calling test as the inner test ``name`` ended; its figures when it passed. A
        failed or skipped one says why, and, for a test of several measured claims (it ends as the
        first that did not hold), its whole line of the inner claim summary, with all their figures."""
        found = self.outcomes.get(name)
        if found is None:
            pytest.fail(f"the inner run (exit status {self.returncode}) reported no outcome for {name}:\n"
                        f"{self.tail()}", pytrace=False)
        line = self.summary_line(name).removeprefix(name).removeprefix(": ")
        several = line.count(" rounds") > 1  # each measured claim's figures say how many rounds
        why = f"on the simulated hosts: {found.message}" + (f" [all figures: {line}]" if several else "")
        if found.outcome == "failed":
            pytest.fail(why, pytrace=False)
        if found.outcome == "skipped":
            pytest.skip(why)
        return self.extra_info.get(name, {})


    def summary_line(self, name: str) -> str:
        """The inner run's line for ``name`` in its claim summary (verdict words stripped, the
        summary's wrapped continuation lines joined)."""
        lines = self.output.splitlines()
        for i, line in enumerate(lines):
            words = line.split(maxsplit=2)
            if len(words) >= 2 and words[0] in VERDICT_WORDS and _name(words[1]) == name:
                text = words[2:]
                for more in lines[i + 1:]:
                    if not more.startswith(" ") or not more.strip():
                        break
                    text.append(more.strip())
                return f"{name}: {' '.join(text)}" if text else name
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
    found = beside_python("mpiexec")
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
# The outer side, shared by the MPI and the Ray cluster files


def inner_args(config: pytest.Config, results: Path, selection: Sequence[str]) -> list[str]:
    """The inner run's options: ``selection`` (``-m``/``-k``), its own ``--basetemp`` under
    ``results``, and this session's budget and confidence."""
    return [*selection, f"--basetemp={results / 'base'}",
            f"--hpc-budget={config.getoption('hpc_budget'):g}",
            f"--hpc-confidence={config.getoption('hpc_confidence'):g}"]


def left_nothing(hosts: SimHosts) -> None:
    """Fail the calling fixture if processes outlived the simulated hosts' teardown."""
    if hosts.left_over:
        pytest.fail(f"processes outlived the simulated hosts: {hosts.left_over}", pytrace=False)


def mirror_claim(run: InnerRun, inner: str, claim: Any) -> None:
    """The outer test of inner test ``inner``: its outcome, and its line of the claim summary."""
    run.mirror(inner)
    claim(run.summary_line(inner))


# ---------------------------------------------------------------------------------------------
# Ray: a head node on the first host, a worker node on each other host, the driver beside the head

RAY_PORT = 6379
RAY_OBJECT_STORE_BYTES = 150 * 2**20
# Each host has its own port space, so fixed agent ports collide with nothing; given, the raylet
# does not wait for its agents to write them (it still waits, 15 s at most, for the agent's HTTP port).
RAY_AGENT_PORTS = {"metrics-export-port": 20001, "dashboard-agent-listen-port": 20002,
                   "dashboard-agent-grpc-port": 20003, "runtime-env-agent-port": 20004}
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "token",  # every node and the driver, with the same token (RAY_AUTH_TOKEN_PATH)
    "RAY_worker_niceness": "0",  # workers at the driver's priority, as the local cluster runs them
    "RAY_health_check_period_ms": "1000",  # a killed node is declared dead within seconds
    "RAY_health_check_failure_threshold": "3",
}
NODE_START_TRIES = 3  # a node that did not come up is ended and started again, this many times at most


@dataclass
class RayNodes:
    """A Ray cluster on simulated hosts: the head's address, the environment every node and the
    driver run with (the same token, the same temporary directory), and how its start went."""

    address: str
    env: dict[str, str]
    start_s: float = 0.0  # from the first ``ray start`` until every node had registered
    tries: dict[str, int] = field(default_factory=dict)  # ``ray start`` calls per host


def ray_executable() -> str | None:
    return beside_python("ray")


def ray_node_env(hosts: SimHosts) -> dict[str, str]:
    """The cluster's Ray environment: a token made for it (a file in the scratch, readable by us
    only) and RAY_TMPDIR in the scratch, apart from any other Ray's /tmp/ray (worker nodes take the
    head's temporary directory from the GCS in any case)."""
    import secrets

    token = hosts.scratch / "ray_auth_token"
    token.touch(mode=0o600)
    token.write_text(secrets.token_hex(32))  # as `ray get-auth-token --generate` makes one
    return {**RAY_ENV, "RAY_AUTH_TOKEN_PATH": str(token), "RAY_TMPDIR": str(hosts.scratch)}


def _last_words(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line or "timed out" in line]
    return (errors or lines or ["(no output)"])[-1][:300]


def start_ray_nodes(hosts: SimHosts, ray: str, deadline_s: float) -> RayNodes:
    """A head node on ``hosts[0]`` and a worker node joining from each other host, one CPU each,
    no dashboard or log monitor; all within ``deadline_s``, or the test is skipped with Ray's words.

    Each ``ray start`` runs in a session of its own at raised priority (``SimHosts.popen_daemon``),
    its output to a file: its daemons inherit what it was started with, and a pipe would stay open
    as long as they live. Ray's own limits are short and fixed: a raylet aborts when its dashboard
    agent has not written its HTTP port within 15 s, and ``ray start`` gives the node 30 s to
    register; on a loaded machine the agent's imports alone take longer, hence the priority. A node
    that misses them is ended and started again (``NODE_START_TRIES``). Every host is put back to
    normal priority once all nodes are up, before anything is measured."""
    head = hosts[0]
    nodes = RayNodes(f"{head.address}:{RAY_PORT}", ray_node_env(hosts))
    common = ["--num-cpus=1", f"--object-store-memory={RAY_OBJECT_STORE_BYTES}", "--disable-usage-stats",
              "--include-log-monitor=false",
              *(f"--{option}={port}" for option, port in RAY_AGENT_PORTS.items())]
    end = time.monotonic() + deadline_s
    try:
        for host in hosts:
            role = (["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if host is head
                    else [f"--address={nodes.address}"])
            command = [ray, "start", *role, f"--node-ip-address={host.address}", *common]
            why = _start_node(hosts, host, command, nodes, end)
            if why is not None:
                pytest.skip(f"the Ray node on {host.hostname} did not come up in "
                            f"{nodes.tries[host.hostname]} tries within {deadline_s:g} s "
                            f"(load average {os.getloadavg()[0]:.1f}): {why}")
        nodes.start_s = deadline_s - (end - time.monotonic())
    finally:
        for host in hosts:
            hosts.renice(host, 0)
    return nodes


def _start_node(hosts: SimHosts, host: SimHost, command: Sequence[str], nodes: RayNodes,
                end: float) -> str | None:
    """``ray start`` on ``host``, tried again while it fails and time is left; None once it ends
    well (the node has registered), else the last try's reason."""
    why = "no time left"
    for attempt in range(1, NODE_START_TRIES + 1):
        left = end - time.monotonic()
        if left < 1:
            break
        nodes.tries[host.hostname] = attempt
        end_processes(host.netns)  # what a failed try left
        log = hosts.scratch / f"ray-start-{host.hostname}-{attempt}.log"
        with log.open("w") as out:
            started = hosts.popen_daemon(host, command, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, **nodes.env})
        try:
            if started.wait(timeout=left) == 0:
                return None
            why = _last_words(log)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()
            why = f"`ray start` had not ended when the time was up ({_last_words(log)})"
    nodes.tries.setdefault(host.hostname, 0)
    return why


def ray_driver_run(hosts: SimHosts, nodes: RayNodes, test_file: Path, args: Sequence[str], results: Path,
                   env: Mapping[str, str], timeout: float) -> InnerRun:
    """``test_file`` run by a driver on the head's host, connected through RAY_ADDRESS."""
    full = {**nodes.env, "RAY_ADDRESS": nodes.address, **env}
    return _run(hosts, inner_pytest(test_file, results, args), results, "junit.xml", full, timeout)
