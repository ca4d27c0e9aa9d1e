"""The session's Ray cluster: a local one with every listener on 127.0.0.1, or a connection to the
cluster that ``RAY_ADDRESS`` names. Start-up, the processes it made, its listeners, and shutdown.

Only the standard library is imported here; Ray is imported when a cluster is started, after the
environment that decides its binding is set (Ray reads it once, when it is imported).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.measure import _descendant_pids

# What the local cluster runs with. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray take 127.0.0.1 as
# the node address, as it does on macOS and Windows; on Linux it would otherwise bind every interface
# and rewrite ``_node_ip_address``. Workers run at nice 15 unless told, which would lose any
# comparison with a baseline that runs at the driver's niceness.
LOCAL_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_worker_niceness": "0",
}
# The largest object a claim puts is 32 MiB; Ray's default (30% of memory) is for a machine of its own.
OBJECT_STORE_BYTES = 256 * 2**20
# Ray processes need a moment to exit after ray.shutdown(); a process still there after this is left over.
EXIT_WAIT_S = 15.0


def _start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live process, None for none or a zombie: with
    the pid, it names one process, so a pid reused meanwhile is not taken for the old process."""
    from ..core.procfs import start_time

    return start_time(pid)


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int | None

    @classmethod
    def of(cls, pid: int) -> Proc:
        return cls(pid, _start_time(pid))

    def alive(self) -> bool:
        start = _start_time(self.pid)
        return start is not None and start == self.start


def processes_under(roots: Iterable[int]) -> list[Proc]:
    """``roots`` and all their live descendants, each with its start time."""
    pids = set(roots)
    for root in list(pids):
        pids.update(_descendant_pids(root))
    return [proc for proc in map(Proc.of, sorted(pids)) if proc.start is not None]


def wait_gone(procs: Iterable[Proc], timeout: float = EXIT_WAIT_S) -> list[Proc]:
    """Wait up to ``timeout`` for the processes to exit; those still alive then."""
    left = [p for p in procs if p.alive()]
    deadline = time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if p.alive()]
    return left


# ---------------------------------------------------------------------------------------------
# Listening sockets, from /proc/net and the processes' file descriptors


@dataclass(frozen=True)
class Listener:
    pid: int
    protocol: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        ip = ipaddress.ip_address(self.address)
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return (mapped or ip).is_loopback  # ::ffff:127.0.0.1 is loopback (Python < 3.13 says no)

    def __str__(self) -> str:
        return f"{self.protocol} {self.address}:{self.port} (pid {self.pid})"


def _hex_address(text: str) -> tuple[str, int]:
    """/proc/net's ``0100007F:1F90`` (IPv4) or 32 hex digits (IPv6), each 32-bit word little-endian."""
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(swapped)), int(port, 16)


def bound_sockets() -> dict[int, tuple[str, str, int]]:
    """Socket inode -> (protocol, address, port) of every listening TCP and bound UDP socket."""
    found: dict[int, tuple[str, str, int]] = {}
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            state, inode = fields[3], int(fields[9])
            if (protocol.startswith("tcp") and state != "0A") or inode == 0:  # 0A: LISTEN
                continue
            address, port = _hex_address(fields[1])
            found[inode] = (protocol, address, port)
    return found


def listeners(pids: Iterable[int]) -> list[Listener]:
    """The listening (TCP) and bound (UDP) sockets that the processes ``pids`` hold."""
    sockets = bound_sockets()
    found = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                entry = sockets.get(int(target[8:-1]))
                if entry:
                    found.append(Listener(pid, *entry))
    return sorted(set(found), key=lambda s: (s.pid, s.protocol, s.port))


def driver_port() -> int:
    """The port of this driver's own Ray server (its core worker), read from the owner address of an
    object it puts: its other sockets, MPI's for one, are not Ray's."""
    from ._private_compat import driver_port

    return driver_port()


# ---------------------------------------------------------------------------------------------
# The cluster


def _is_loopback_address(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _auth_token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return "RAY_AUTH_TOKEN" in os.environ or Path(path).exists()


def _set_env(values: dict[str, str]) -> dict[str, str | None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    return saved


def _restore_env(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _set_cluster_mode(enabled: bool) -> bool:
    """Set what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER decides, returning the previous value. Ray reads
    the variable once, when imported: a session that imported Ray before needs the module's copy set
    too, or every listener binds all interfaces (the listener test catches that)."""
    from ._private_compat import set_cluster_mode

    return set_cluster_mode(enabled)


def _put_back(handlers: dict[int, Any]) -> None:
    """Restore the signal handlers ``ray.init`` replaced: its SIGTERM handler calls ``sys.exit(15)``
    inside whatever test runs, where the session's (core/interrupts.py) ends the session cleanly."""
    if threading.current_thread() is threading.main_thread():
        for signum, handler in handlers.items():
            if handler is not None and signal.getsignal(signum) != handler:
                signal.signal(signum, handler)


def worker_niceness() -> int:
    """Runs in a Ray worker: the niceness it runs at."""
    return os.nice(0)


@dataclass
class RayCluster:
    """The session's cluster: local (started here, ours to stop) or the one ``RAY_ADDRESS`` names."""

    local: bool
    address: str
    start_s: float
    resources: dict[str, float]
    nodes: int
    worker_nice: int
    roots: list[Proc]  # local: the processes ray.init started (GCS, raylet, workers, ...)
    node_resources: dict[str, dict[str, float]] = field(default_factory=dict)  # live nodes by address
    saved_env: dict[str, str | None] = field(default_factory=dict, repr=False)
    saved_cluster_mode: bool | None = None  # None: left as it was
    stop_s: float | None = None
    stopped_processes: int = 0
    left_over: list[Proc] = field(default_factory=list)

    @property
    def cpus(self) -> int:
        return int(self.resources.get("CPU", 0))

    def processes(self) -> list[Proc]:
        """Local: the live processes of the cluster (workers come and go); none for RAY_ADDRESS."""
        return processes_under(p.pid for p in self.roots if p.alive())

    def stop(self) -> None:
        """Disconnect, and for a local cluster wait until every process it had has exited."""
        import ray

        procs = self.processes()
        t0 = time.perf_counter()
        ray.shutdown()
        self.left_over = wait_gone(procs)
        self.stop_s = time.perf_counter() - t0
        self.stopped_processes = len(procs)
        if self.saved_cluster_mode is not None:
            _set_cluster_mode(self.saved_cluster_mode)
        _restore_env(self.saved_env)

    def describe(self) -> str:
        where = "local cluster on 127.0.0.1 (started" if self.local else \
            f"cluster at RAY_ADDRESS={self.address} (connected"
        store = self.resources.get("object_store_memory", 0) / 2**20
        line = (f"ray {where} in {self.start_s:.1f} s): {self.cpus} CPUs, object store {store:.0f} MiB, "
                f"{self.nodes} node{'s' if self.nodes != 1 else ''}, workers at nice {self.worker_nice}")
        if len(self.node_resources) > 1:
            line += "; nodes: " + ", ".join(
                f"{address} ({res.get('CPU', 0):g} CPUs, {res.get('object_store_memory', 0) / 2**20:.0f} MiB)"
                for address, res in self.node_resources.items())
        return line

    def stop_line(self) -> str:
        if self.stop_s is None:
            return "ray: the cluster was not stopped"
        if not self.local:
            return f"ray: disconnected from {self.address} in {self.stop_s:.1f} s; that cluster keeps running"
        left = ", ".join(str(p.pid) for p in self.left_over) or "none"
        return (f"ray: local cluster stopped in {self.stop_s:.1f} s; {len(self.left_over)} of "
                f"{self.stopped_processes} processes left after {EXIT_WAIT_S:g} s ({left})")

    def as_dict(self) -> dict[str, object]:
        return {"local": self.local, "address": self.address, "start_s": self.start_s,
                "resources": self.resources, "nodes": self.nodes, "worker_nice": self.worker_nice,
                "stop_s": self.stop_s, "left_over": len(self.left_over),
                "node_resources": self.node_resources}


def start_cluster(num_cpus: int, address: str | None, timeout: float = 120.0) -> RayCluster:
    """A local cluster of ``num_cpus`` CPUs on 127.0.0.1, or a connection to ``address``.

    The start-up time includes importing Ray, since a session pays for both.
    """
    env = dict(LOCAL_ENV)
    if address is not None:
        if not _is_loopback_address(address):  # the cluster must reach this driver from elsewhere
            del env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]
        if "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
            env["RAY_AUTH_MODE"] = "token"  # a client given an address does not send it otherwise
        del env["RAY_worker_niceness"]  # the cluster's workers were started by it, not by us
    saved = _set_env(env)
    saved_mode = None
    handlers: dict[int, Any] = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        before = set(_descendant_pids(os.getpid()))
        t0 = time.perf_counter()
        import ray

        if "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" in env:
            saved_mode = _set_cluster_mode(False)
        if address is None:
            ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False,
                     object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, logging_level="warning")
        else:  # with an address, Ray refuses num_cpus and the like: the cluster has its own
            ray.init(address=address, log_to_driver=False, logging_level="warning")
        _put_back(handlers)
        start_s = time.perf_counter() - t0
        new = set(_descendant_pids(os.getpid())) - before if address is None else set()
        roots = [Proc.of(pid) for pid in sorted(new)]
        nice = ray.get(ray.remote(worker_niceness).remote(), timeout=timeout)
        return RayCluster(
            local=address is None,
            address=ray.get_runtime_context().gcs_address,
            start_s=start_s,
            resources=dict(ray.cluster_resources()),
            nodes=sum(1 for node in ray.nodes() if node.get("Alive")),
            node_resources={node["NodeManagerAddress"]: dict(node.get("Resources", {}))
                            for node in ray.nodes() if node.get("Alive")},
            worker_nice=int(nice),
            roots=roots,
            saved_env=saved,
            saved_cluster_mode=saved_mode,
        )
    except BaseException:
        _put_back(handlers)
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        if saved_mode is not None:
            _set_cluster_mode(saved_mode)
        _restore_env(saved)
        raise
