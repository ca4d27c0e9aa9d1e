"""Simulated hosts on one machine: each a network namespace with its own address and host name,
all joined by a bridge, so that MPI and Ray run across "hosts" as they would across a cluster.

Every namespace lives under the name ``hpcdemo-<pid>-...``: a switch namespace holding the bridge,
and one namespace per host whose ``eth0`` is one end of a veth pair (the other end on the bridge).
Nothing is added to the machine's own network namespace, so the project's subnet (``SUBNET``) can
be used by several runs at once without colliding. Leaving the context ends every process still
inside a host (``ip netns pids``) and deletes every namespace and the run's scratch directory
(``/tmp/hpcdemo-<pid>-<n>``, for what the hosts write: sockets, logs), whatever stopped the run;
what a run that was killed outright left is removed by the next one.

A host's daemons can be started in a session of their own (:meth:`SimHosts.popen_daemon`): on a
kernel with autogroup scheduling each session is one scheduling group, so a host's processes share
the CPU as one machine would, and a start-up can be given priority over other sessions' load
(:data:`START_NICE`), then put back to normal (:meth:`SimHosts.renice`) before anything is measured.

Standard library only; needs root, ``ip`` (iproute2) and ``unshare`` (util-linux).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import procfs

SUBNET = "10.213.0"  # 10.213.0.0/24, inside the switch namespace only
PREFIX = "hpcdemo"
EXIT_WAIT_S = 10.0
ETC_NETNS = Path("/etc/netns")  # per-namespace files that ``ip netns exec`` mounts over /etc
SCRATCH_ROOT = Path("/tmp")  # short paths: Unix sockets of the hosts' daemons go under the scratch
START_NICE = -10  # a daemon start-up's priority (its session's autogroup, and its processes)
_COMMAND_TIMEOUT_S = 30.0
_SCRATCH_NAME = re.compile(rf"{PREFIX}-(\d+)-\d+$")


@dataclass(frozen=True)
class SimHost:
    index: int  # 1, 2, ...
    netns: str
    address: str
    hostname: str


def unavailable_reason() -> str | None:
    """Why simulated hosts cannot be made here (None when they can): tried, not guessed."""
    if not Path("/proc/self/ns/net").exists():
        return "simulated hosts need Linux network namespaces"
    if os.geteuid() != 0:
        return "simulated hosts need root (ip netns add); run as root, or on a real cluster (docs/cluster.md)"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"simulated hosts need `{tool}`: apt-get install {package}"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"network namespaces are not permitted here: ip netns add: {made.stderr.strip()}"
    inside = subprocess.run(["ip", "netns", "exec", probe, "unshare", "--uts", "true"],
                            capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    _ip("netns", "delete", probe, check=False)
    if inside.returncode != 0:
        return f"cannot enter a network namespace with its own host name: {inside.stderr.strip()}"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
    if check and done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def our_namespaces() -> list[str]:
    """Every namespace named by this module, by any run."""
    listing = _ip("netns", "list", check=False).stdout.splitlines()
    return [line.split()[0] for line in listing if line.startswith(PREFIX + "-")]


def pids_in(netns: str) -> list[int]:
    return [int(pid) for pid in _ip("netns", "pids", netns, check=False).stdout.split()]


def end_processes(netns: str, timeout: float = EXIT_WAIT_S) -> list[int]:
    """SIGTERM every process in ``netns``, SIGKILL what is left after ``timeout``; the pids that
    still run after that (none, unless the kernel is stuck)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
        pids = pids_in(netns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while pids_in(netns) and time.monotonic() < end:
            time.sleep(0.05)
    return pids_in(netns)


def remove_stale() -> list[str]:
    """Delete namespaces and scratch directories left by runs whose process is gone (killed before
    it could clean up); their names."""
    removed = []
    etc = [path.name for path in ETC_NETNS.glob(f"{PREFIX}-*")] if ETC_NETNS.is_dir() else []
    for netns in sorted(set(our_namespaces()) | set(etc)):
        owner = netns.split("-")[1]
        if owner.isdigit() and procfs.start_time(int(owner)) is None:
            end_processes(netns, timeout=2.0)
            _ip("netns", "delete", netns, check=False)
            shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)
            removed.append(netns)
    for scratch in SCRATCH_ROOT.glob(f"{PREFIX}-*"):
        named = _SCRATCH_NAME.match(scratch.name)
        if named and scratch.is_dir() and procfs.start_time(int(named.group(1))) is None:
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(str(scratch))
    return removed


def _start_session(nice: int) -> None:
    """In a child before exec: a session of its own (so its own autogroup), at ``nice``."""
    os.setsid()
    with contextlib.suppress(OSError):  # no autogroup scheduling in this kernel
        Path("/proc/self/autogroup").write_text(str(nice))
    os.setpriority(os.PRIO_PROCESS, 0, nice)


class SimHosts:
    """``count`` hosts on one bridge: ``with SimHosts(2) as hosts: hosts.popen(hosts[1], argv)``."""

    _made = 0

    def __init__(self, count: int, exit_wait_s: float = EXIT_WAIT_S) -> None:
        if not 1 <= count <= 200:
            raise ValueError(f"simulated hosts: between 1 and 200, got {count}")
        SimHosts._made += 1
        tag = f"{PREFIX}-{os.getpid()}-{SimHosts._made}"
        self.switch = f"{tag}-sw"
        self.hosts = [SimHost(i, f"{tag}-h{i}", f"{SUBNET}.{i}", f"simhost{i}") for i in range(1, count + 1)]
        self.exit_wait_s = exit_wait_s  # SIGTERM, then this long, then SIGKILL
        self.scratch = SCRATCH_ROOT / tag  # the run's files, made on entry, removed on leaving
        self._created: list[str] = []
        self.left_over: list[int] = []  # pids that outlived the teardown

    def __getitem__(self, index: int) -> SimHost:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[SimHost]:
        return iter(self.hosts)

    def __enter__(self) -> SimHosts:
        remove_stale()
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _write_etc(self, host: SimHost) -> None:
        """/etc/netns/NS/hosts, which ``ip netns exec`` mounts over /etc/hosts: every host's name
        resolves to its address (Ray and MPI look their own host up)."""
        etc = ETC_NETNS / host.netns
        etc.mkdir(parents=True, exist_ok=True)
        names = "".join(f"{h.address}\t{h.hostname}\n" for h in self.hosts)
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{names}")

    def _create(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)  # our name: left only by a reused pid
        self.scratch.mkdir(mode=0o700)
        self._add_netns(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
            self._add_netns(host.netns)
            self._write_etc(host)
            port = f"port{host.index}"
            _ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", host.netns)
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")

    def close(self) -> None:
        """End every process inside the hosts, then delete every namespace made and the scratch
        directory (idempotent)."""
        for name in reversed(self._created):
            self.left_over += end_processes(name, self.exit_wait_s)
            _ip("netns", "delete", name, check=False)
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
        self._created.clear()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def command(self, host: SimHost, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on ``host``: in its network namespace, under its own host name."""
        return ["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c",
                'hostname "$0" && exec "$@"', host.hostname, *argv]

    def popen(self, host: SimHost, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(self.command(host, argv), **kwargs)

    def run(self, host: SimHost, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        return subprocess.run(self.command(host, argv), **kwargs)

    def popen_daemon(self, host: SimHost, argv: Sequence[str], nice: int = START_NICE,
                     **kwargs: Any) -> subprocess.Popen[Any]:
        """:meth:`popen` in a session of its own at priority ``nice``, which the daemons it starts
        inherit: on a loaded machine a start-up with deadlines of its own (Ray's) then meets them."""
        return subprocess.Popen(self.command(host, argv), preexec_fn=lambda: _start_session(nice), **kwargs)

    def renice(self, host: SimHost, nice: int = 0) -> None:
        """Every process on ``host`` (and its session's autogroup) back to priority ``nice``."""
        for pid in pids_in(host.netns):
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/autogroup").write_text(str(nice))
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, pid, nice)

    def listeners(self, host: SimHost) -> list[tuple[str, str]]:
        """(local address, process) of every listening TCP and bound UDP socket on ``host``, as
        ``ss`` run inside its namespace reports them."""
        done = self.run(host, ["ss", "-Htlnup"], capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S)
        rows = [line.split() for line in done.stdout.splitlines() if line.strip()]
        return [(row[4], " ".join(row[6:])) for row in rows]

    def addresses(self, host: SimHost) -> set[str]:
        """The addresses of ``host``'s interfaces (its own, loopback, IPv6 link-local)."""
        done = _ip("-n", host.netns, "-o", "addr", "show")
        return {line.split()[3].split("/")[0] for line in done.stdout.splitlines()}

    def hydra_launcher(self, directory: Path) -> Path:
        """A script for MPICH's ``mpiexec -launcher ssh -launcher-exec SCRIPT``: Hydra calls it as
        ``SCRIPT -x HOST COMMAND`` for each host not local to mpiexec, as it would call ssh; the script
        runs COMMAND (a shell command line, as ssh passes it) on the host with that address."""
        cases = "\n".join(f'  {h.address}) ns={h.netns}; name={h.hostname};;' for h in self.hosts)
        script = directory / "simhost-launch"
        script.write_text(
            "#!/bin/sh\n"
            "# Made by pytest_hpcdemo.cluster.simhosts: Hydra's ssh launcher for hosts that are namespaces.\n"
            '[ "$1" = -x ] && shift\n'
            'host=$1; shift\n'
            'case $host in\n'
            f'{cases}\n'
            '  *) echo "simhost-launch: no simulated host $host" >&2; exit 2;;\n'
            'esac\n'
            'exec ip netns exec "$ns" unshare --uts sh -c "hostname $name && exec $*"\n')
        script.chmod(0o755)
        return script
