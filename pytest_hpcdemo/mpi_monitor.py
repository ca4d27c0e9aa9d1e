"""The MPI job's monitor: names a rank that ended without the plugin's knowing, and tidies after it.

A rank killed by SIGKILL or ended by ``os._exit`` or a crash in C runs no code of ours, and the
launcher then kills every other rank at once (MPICH's Hydra with SIGKILL), so no rank can say which
one died; Hydra names a PID and mpirun's exit status is the dead rank's. Rank 0 starts this script
(``python mpi_monitor.py JSON``, standard library only, in a session of its own so that a Ctrl-C to
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

import json
import os
import select
import shutil
import signal
import sys
from pathlib import Path

SHM_REFRESH_S = 1.0


def start_time(pid: int) -> int | None:
    """A live process's start time in clock ticks (with the pid it names one process); None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return None if fields[0] == "Z" else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def exit_status(pid: int) -> str | None:
    """How a process that just ended did so, read from its zombie's /proc/PID/stat (field 52), which
    its parent (the launcher's proxy) has not yet reaped; None once it has."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    if fields[0] != "Z" or len(fields) < 50:
        return None
    status = int(fields[49])
    if status & 0x7F:
        return f"killed by {signal.Signals(status & 0x7F).name}"
    return f"exit status {status >> 8}"


def mapped_shared_memory(pid: int) -> set[str]:
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except OSError:
        return set()
    return {path for line in lines if (path := line.split(maxsplit=5)[-1]).startswith("/dev/shm/")}


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
    alive = dict(pidfds)
    watched: list[int] = [0]  # stdin, until rank 0's end closes it
    while alive:
        if not ended_first:
            for _, pid, _ in ranks:
                shm |= mapped_shared_memory(pid)
        ready, _, _ = select.select([*watched, *alive], [], [], SHM_REFRESH_S)
        if 0 in ready:
            data = os.read(0, 64)
            if b"end" in data:
                return  # the session closed: every rank ends as it should now
            if not data:
                watched = []
        gone = [fd for fd in ready if fd != 0]
        if gone and not ended_first:
            ended_first = sorted(alive[fd] for fd in gone)
            pids = {rank: pid for rank, pid, _ in ranks}
            statuses = {rank: exit_status(pids[rank]) for rank in ended_first}
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
