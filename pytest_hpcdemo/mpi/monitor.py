"""The MPI job's monitor: names a rank that ended without the plugin's knowing, and tidies after it.

A rank killed by SIGKILL or ended by ``os._exit`` or a crash in C runs no code of ours, and the
launcher then kills every other rank at once (MPICH's Hydra with SIGKILL), so no rank can say which
one died; Hydra names a PID and mpirun's exit status is the dead rank's. Rank 0 starts this script
(``python monitor.py JSON``, standard library only, in a session of its own so that a Ctrl-C to
the terminal does not reach it) with every rank's PID. It waits on a pidfd per rank, so that it wakes
as the first rank ends, before the launcher's clean-up takes the others, and then, once all are
gone: names the ranks that ended first, removes the session's temporary base (when the session made
it) and unlinks the shared memory names the ranks had mapped (MPICH's ``mpich_shm_*``).

It stays quiet when the end was announced: rank 0 writes ``end`` to its stdin as the session closes,
and a rank whose watchdog aborts the job first creates the notice file (or removes the base). The
launcher waits for the monitor, which holds the rank's stderr, so its line is printed before mpirun
returns; the monitor exits as soon as every rank is gone.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

SHM_REFRESH_S = 1.0


def start_time(pid: int) -> int | None:
    """A live process's start time in clock ticks (with the pid it names one process); None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def describe_status(status: int) -> str:
    """A wait status in words."""
    if status & 0x7F:
        return f"killed by {signal.Signals(status & 0x7F).name}"
    return f"exit status {status >> 8}"


def zombie_status(pid: int) -> str | None:
    """How a process that just ended did so, read from its zombie's /proc/PID/stat (field 52), which
    its parent (the launcher's proxy) has not yet reaped; None once it has."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] != "Z" or len(fields) < 50:
        return None
    return describe_status(int(fields[49]))


# Linux's process events connector: every process's exit status as it exits, with no race against
# the parent's reaping. Needs CAP_NET_ADMIN; without it, the zombie's status is read instead.
NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC, PROC_CN_MCAST_LISTEN = 11, 1, 1, 1
NLMSG_DONE, PROC_EVENT_EXIT = 3, 0x80000000
NLMSG_HEADER, CN_MSG, EVENT_HEADER = "=IHHII", "=IIIIHH", "=IIQ"
EVENT_DATA = struct.calcsize(NLMSG_HEADER) + struct.calcsize(CN_MSG) + struct.calcsize(EVENT_HEADER)


def exit_events() -> socket.socket | None:
    """A socket that receives every process's exit (pid, wait status); None where not permitted."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
    except (OSError, AttributeError):
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((os.getpid(), CN_IDX_PROC))
        op = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        msg = struct.pack(CN_MSG, CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
        sock.send(struct.pack(NLMSG_HEADER, struct.calcsize(NLMSG_HEADER) + len(msg), NLMSG_DONE, 0, 0,
                              os.getpid()) + msg)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def read_exits(sock: socket.socket, wanted: set[int]) -> dict[int, tuple[int, int]]:
    """pid -> (kernel timestamp in ns, wait status) of the processes in ``wanted`` whose exit events
    are waiting."""
    found: dict[int, tuple[int, int]] = {}
    while True:
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return found
        except OSError as exc:  # ENOBUFS: events were dropped on a busy machine; zombies are read then
            if exc.errno == errno.ENOBUFS:
                continue
            return found
        if len(data) < EVENT_DATA + 16:
            continue
        what, _, stamp = struct.unpack_from(EVENT_HEADER, data, EVENT_DATA - struct.calcsize(EVENT_HEADER))
        if what != PROC_EVENT_EXIT:
            continue
        pid, tgid, status, _ = struct.unpack_from("=IIII", data, EVENT_DATA)
        if pid == tgid and tgid in wanted:
            found[tgid] = (stamp, status)


def mapped_shared_memory(pid: int) -> set[str]:
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {path for line in lines if (path := line.split(maxsplit=5)[-1]).startswith("/dev/shm/")}


def first_to_end(gone: list[int], exits: dict[int, tuple[int, int]], pid_of: dict[int, int]) -> list[int]:
    """The ranks among ``gone`` (all ended by the time the monitor woke) that ended first: the one
    whose exit the kernel stamped earliest where every exit was seen (a loaded machine can wake the
    monitor only after the launcher killed the rest), else all of them."""
    if len(gone) > 1 and all(pid_of[rank] in exits for rank in gone):
        return [min(gone, key=lambda rank: exits[pid_of[rank]][0])]
    return sorted(gone)


def watch(ranks: list[tuple[int, int, str]], base: Path, own_base: bool, notice: Path) -> None:
    pidfds: dict[int, int] = {}  # pidfd -> rank
    for rank, pid, _ in ranks:
        try:
            pidfds[os.pidfd_open(pid)] = rank
        except OSError:  # already gone: its pidfd would never be made, it ended first
            pidfds[os.open(os.devnull, os.O_RDONLY)] = rank
    shm: set[str] = set()
    ended_first: list[int] = []
    statuses: dict[int, str | None] = {}
    events = exit_events()
    rank_of = {pid: rank for rank, pid, _ in ranks}
    pid_of = {rank: pid for rank, pid, _ in ranks}
    exits: dict[int, tuple[int, int]] = {}  # pid -> (timestamp, wait status), from the events
    alive = dict(pidfds)
    watched: list[Any] = [0]  # stdin, until rank 0's end closes it
    if events is not None:
        watched.append(events)
    os.write(1, b"ready\n")  # rank 0 lets the tests start
    os.close(1)
    refreshed = 0.0
    while alive:
        if not ended_first and time.monotonic() - refreshed >= SHM_REFRESH_S:
            refreshed = time.monotonic()
            for _, pid, _ in ranks:
                shm |= mapped_shared_memory(pid)
        ready, _, _ = select.select([*watched, *alive], [], [], SHM_REFRESH_S)
        if events is not None:  # an exit's event comes before its pidfd is ready
            exits |= read_exits(events, set(rank_of))
        if 0 in ready:
            data = os.read(0, 64)
            if b"end" in data:
                return  # the session closed: every rank ends as it should now
            if not data:
                watched.remove(0)
        gone = [fd for fd in ready if isinstance(fd, int) and fd != 0]
        if gone and not ended_first:
            ended_first = first_to_end([alive[fd] for fd in gone], exits, pid_of)
            statuses = {rank_of_pid: describe_status(exits[pid][1]) if pid in exits else zombie_status(pid)
                        for pid, rank_of_pid in rank_of.items() if rank_of_pid in ended_first}
        for fd in gone:
            del alive[fd]
    if notice.exists() or not base.exists():
        return  # a watchdog announced the abort and tidied
    who = ", ".join(f"rank {rank} (pid {pid} on {host}: {statuses.get(rank) or 'status reaped unread'})"
                    for rank, pid, host in ranks if rank in ended_first)
    tidied = []
    if own_base:
        shutil.rmtree(base, ignore_errors=True)
        tidied.append(f"removed {base}")
    for name in sorted(shm):
        try:
            os.unlink(name)
        except OSError:
            continue
        tidied.append(f"unlinked {name}")
    sys.stderr.write(f"\nhpcdemo: {who} of {len(ranks)} ended first, while the job ran and without "
                     "the plugin's knowing (a signal, os._exit, or a crash in C); the launcher then "
                     "killed the others, and the PID and status it reports may be theirs"
                     f"{'; ' + ', '.join(tidied) if tidied else ''}\n")
    sys.stderr.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spec = json.loads(sys.argv[1])
    watch([tuple(r) for r in spec["ranks"]], Path(spec["base"]), spec["own_base"], Path(spec["notice"]))


if __name__ == "__main__":
    main()
