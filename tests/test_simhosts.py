"""The simulated-hosts harness (pytest_hpcdemo.cluster.simhosts): hosts that reach each other over the
bridge and only over it, each under its own host name, and a teardown that leaves nothing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_hpcdemo.cluster import simhosts
from pytest_hpcdemo.core import procfs

REASON = simhosts.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

ECHO_SERVER = """
import socket, sys
s = socket.create_server((sys.argv[1], 7777)); print("ready", flush=True)
c, peer = s.accept(); c.sendall(socket.gethostname().encode() + b" " + peer[0].encode()); c.close()
"""
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 7777), timeout=5); print(c.recv(100).decode())
"""


def test_hosts_reach_each_other_over_the_bridge_under_their_own_names() -> None:
    with simhosts.SimHosts(2) as hosts:
        h1, h2 = hosts
        server = hosts.popen(h2, [sys.executable, "-c", ECHO_SERVER, h2.address],
                             stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            reply = hosts.run(h1, [sys.executable, "-c", CLIENT, h2.address], capture_output=True,
                              text=True, timeout=30)
            assert reply.returncode == 0, reply.stderr
            assert reply.stdout.split() == [h2.hostname, h1.address]  # served on h2, seen coming from h1
        finally:
            server.kill()
            server.wait()
        names = {hosts.run(h, ["hostname"], capture_output=True, text=True).stdout.strip() for h in hosts}
        assert names == {"simhost1", "simhost2"}
        lookup = "import socket; print(socket.gethostbyname('simhost2'))"
        resolved = hosts.run(h1, [sys.executable, "-c", lookup], capture_output=True, text=True)
        assert resolved.stdout.strip() == h2.address


def test_a_host_is_not_reachable_from_the_machine_itself() -> None:
    """The subnet exists only inside the switch namespace: nothing outside reaches a host."""
    import socket

    with simhosts.SimHosts(1) as hosts:
        server = hosts.popen(hosts[0], [sys.executable, "-c", ECHO_SERVER, hosts[0].address],
                             stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            with contextlib.suppress(OSError):  # the default route may lead to something that answers
                socket.create_connection((hosts[0].address, 7777), timeout=1).close()
            time.sleep(0.2)
            assert server.poll() is None, "the host's server accepted a connection from outside"
        finally:
            server.kill()
            server.wait()


def test_leaving_ends_every_process_inside_and_deletes_every_namespace() -> None:
    with simhosts.SimHosts(2, exit_wait_s=0.5) as hosts:
        made = {hosts.switch, *(h.netns for h in hosts)}
        assert made <= set(simhosts.our_namespaces())
        # A process that ignores SIGTERM, detached from us: only the namespace knows it.
        hosts.run(hosts[1], ["sh", "-c", "trap '' TERM; setsid sleep 600 >/dev/null 2>&1 &"], timeout=30)
        orphan = simhosts.pids_in(hosts[1].netns)
        assert orphan
    assert not made & set(simhosts.our_namespaces())
    assert not any((simhosts.ETC_NETNS / name).exists() for name in made)
    assert hosts.left_over == []
    assert not any(procfs.start_time(pid) is not None for pid in orphan)  # gone, or a zombie


def test_an_error_while_making_the_hosts_leaves_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = simhosts.SimHosts(2)
    real = simhosts._ip

    def failing(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if "addr" in args and args[-1] == "eth0" and hosts[1].netns in args:
            raise OSError("injected failure")
        return real(*args, check=check)

    monkeypatch.setattr(simhosts, "_ip", failing)
    with pytest.raises(OSError, match="injected"), hosts:
        pass
    monkeypatch.undo()
    assert not {hosts.switch, hosts[0].netns, hosts[1].netns} & set(simhosts.our_namespaces())


def test_namespaces_of_a_dead_run_are_removed() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{simhosts.PREFIX}-{dead.pid}-1-sw"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        time.sleep(0.01)
        assert stale in simhosts.remove_stale()
        assert stale not in simhosts.our_namespaces()
    finally:
        subprocess.run(["ip", "netns", "delete", stale], capture_output=True)


def test_a_bad_host_count_is_one_line() -> None:
    with pytest.raises(ValueError, match="between 1 and 200, got 0"):
        simhosts.SimHosts(0)


def test_the_scratch_directory_lives_as_long_as_the_hosts_and_a_dead_runs_is_removed() -> None:
    with simhosts.SimHosts(1) as hosts:
        assert hosts.scratch.is_dir() and hosts.scratch.stat().st_mode & 0o077 == 0
        (hosts.scratch / "session").mkdir()
    assert not hosts.scratch.exists()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = simhosts.SCRATCH_ROOT / f"{simhosts.PREFIX}-{dead.pid}-1"
    kept = simhosts.SCRATCH_ROOT / f"{simhosts.PREFIX}-{dead.pid}-build"  # not a name of ours
    stale.mkdir()
    kept.mkdir()
    try:
        assert str(stale) in simhosts.remove_stale()
        assert not stale.exists() and kept.exists()
    finally:
        kept.rmdir()


def _nice_of(pid: int) -> tuple[int, int | None]:
    """A process's nice, and its autogroup's (None without autogroup scheduling)."""
    autogroup = Path(f"/proc/{pid}/autogroup")
    group = int(autogroup.read_text().split()[-1]) if autogroup.exists() else None
    return os.getpriority(os.PRIO_PROCESS, pid), group


def test_a_daemon_starts_in_a_session_of_its_own_at_raised_priority_until_reniced() -> None:
    with simhosts.SimHosts(1) as hosts:
        daemon = hosts.popen_daemon(hosts[0], ["sleep", "60"])
        try:
            wait_until(lambda: Path(f"/proc/{daemon.pid}/comm").read_text().strip() == "sleep")
            assert os.getsid(daemon.pid) == daemon.pid != os.getsid(0)
            nice, group = _nice_of(daemon.pid)
            assert nice == simhosts.START_NICE and group in (None, simhosts.START_NICE)
            hosts.renice(hosts[0])
            assert _nice_of(daemon.pid) == (0, None if group is None else 0)
        finally:
            daemon.kill()
            daemon.wait()


def test_listeners_and_addresses_are_read_inside_the_host() -> None:
    with simhosts.SimHosts(2) as hosts:
        h2 = hosts[1]
        assert {h2.address, "127.0.0.1"} <= hosts.addresses(h2)
        assert not {hosts[0].address} & hosts.addresses(h2)
        server = hosts.popen(h2, [sys.executable, "-c", ECHO_SERVER, h2.address], stdout=subprocess.PIPE,
                             text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            found = hosts.listeners(h2)
            assert any(local == f"{h2.address}:7777" and f"pid={server.pid}" in who
                       for local, who in found), found
            assert hosts.listeners(hosts[0]) == []
        finally:
            server.kill()
            server.wait()


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.02)
