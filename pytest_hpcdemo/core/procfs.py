"""The /proc and /sys readers: one module for what the kernel tells about processes and the machine.

Each returns None (or an empty result) where the file is missing or unreadable (not Linux, a process
gone meanwhile), never raises OSError. Standard library only: core/measure.py, the gate and the
chapters import it without pytest. ``mpi/monitor.py`` keeps its own two readers: it runs as a
stand-alone script (``python monitor.py``), outside this package.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")
SYS_CPU = Path("/sys/devices/system/cpu")


def read(path: str | Path) -> str | None:
    """A small kernel file's text, stripped; None when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def stat_fields(pid: int | str) -> list[str] | None:
    """``/proc/PID/stat`` after the command name (which may hold spaces and parentheses):
    ``fields[0]`` is the state, ``[1]`` the parent pid, ``[11:15]`` the CPU ticks, ``[19]`` the
    start time; None for a process that is gone."""
    text = read(PROC / str(pid) / "stat")
    return None if text is None else text.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    """A live process's start time in clock ticks since boot (with the pid it names one process);
    None when it is gone or a zombie."""
    fields = stat_fields(pid)
    try:
        return None if fields is None or fields[0] == "Z" else int(fields[19])
    except (ValueError, IndexError):
        return None


def cpu_ticks(pid: int) -> int:
    """CPU ticks of a process and of the children it has reaped (user, system, both children's);
    0 for a process that is gone."""
    fields = stat_fields(pid)
    return 0 if fields is None else sum(int(v) for v in fields[11:15])


def children() -> dict[int, list[int]]:
    """Every process's children, by parent pid."""
    found: dict[int, list[int]] = {}
    try:
        entries = [e.name for e in PROC.iterdir() if e.name.isdigit()]
    except OSError:
        return found
    for name in entries:
        fields = stat_fields(name)
        if fields is not None:
            found.setdefault(int(fields[1]), []).append(int(name))
    return found


def system_cpu_ticks() -> list[int] | None:
    """``/proc/stat``'s machine-wide CPU ticks: user, nice, system, idle, iowait, irq, softirq, steal."""
    try:
        with open(PROC / "stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return [int(v) for v in fields[1:9]]


def mapped_shared_memory(pid: int | str = "self") -> set[str]:
    """The /dev/shm files that a process maps (Linux; none elsewhere)."""
    text = read(PROC / str(pid) / "maps")
    if not text:
        return set()
    paths = (line.split(maxsplit=5)[-1] for line in text.splitlines())
    return {path for path in paths if path.startswith("/dev/shm/")}


def boot_id() -> str | None:
    """The running kernel's boot id: the same in every namespace of one machine."""
    return read(PROC / "sys/kernel/random/boot_id")
