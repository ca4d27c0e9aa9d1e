"""The /proc and /sys readers: one module for what the kernel tells about processes and the machine.

Each returns None (or an empty result) where the file is missing or unreadable (not Linux, a process
gone meanwhile), never raises OSError; the callers parse and decide. Standard library only:
core/measure.py, the gate and the chapters import it without pytest. ``mpi/monitor.py`` keeps its
own two readers: it runs as a stand-alone script (``python monitor.py``), outside this package.
"""

from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")
SYS_CPU = Path("/sys/devices/system/cpu")
SYS_NODE = Path("/sys/devices/system/node")
SYS_CGROUP = Path("/sys/fs/cgroup")


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


def kib_field(text: str | None, key: str) -> int | None:
    """The figure of a ``Key:   1234 kB`` line (/proc/meminfo, /proc/PID/status); None without one."""
    for line in (text or "").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def status_kib(pid: int | str, key: str) -> int | None:
    """A ``/proc/PID/status`` figure in KiB (``VmHWM``, ``RssAnon``); None for a process that is gone."""
    return kib_field(read(PROC / str(pid) / "status"), key)


def meminfo_kib(key: str) -> int | None:
    """A ``/proc/meminfo`` figure in KiB (``MemTotal``)."""
    return kib_field(read(PROC / "meminfo"), key)


def reset_peak(pid: int | str) -> bool:
    """Reset a process's resident high-water mark (``5`` into ``/proc/PID/clear_refs``, Linux 4.0+):
    True once done or when the process is gone, False where the kernel refuses."""
    try:
        (PROC / str(pid) / "clear_refs").write_text("5")
    except FileNotFoundError:
        return True  # exited meanwhile
    except OSError:
        return False
    return True


def private_kib(pid: int | str) -> int | None:
    """A process's unique resident KiB: ``Private_Clean + Private_Dirty`` in ``/proc/PID/smaps_rollup``."""
    text = read(PROC / str(pid) / "smaps_rollup")
    if text is None:
        return None
    return sum(int(line.split()[1]) for line in text.splitlines()
               if line.startswith(("Private_Clean:", "Private_Dirty:")))


def cpuinfo() -> str | None:
    """``/proc/cpuinfo``."""
    return read(PROC / "cpuinfo")


def nvidia_driver_version() -> str | None:
    """``/proc/driver/nvidia/version``: there only while the NVIDIA kernel module is loaded."""
    return read(PROC / "driver/nvidia/version")


def own_cgroup_dirs() -> list[Path]:
    """This process's cgroup directories (v2 unified, then v1 cpu controller), then the root."""
    dirs: list[Path] = []
    for line in (read(PROC / "self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":
            dirs.append(SYS_CGROUP / rel.lstrip("/"))
        elif "cpu" in controllers.split(","):
            for base in ("cpu,cpuacct", "cpu"):
                dirs.append(SYS_CGROUP / base / rel.lstrip("/"))
    dirs.append(SYS_CGROUP)
    return dirs


def cgroup_cpu_limits() -> list[tuple[str | None, str | None, str | None]]:
    """Each of this process's cgroups' CPU limit files: (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``,
    v1 ``cpu.cfs_period_us``), None for a file it does not have."""
    return [(read(d / "cpu.max"), read(d / "cpu.cfs_quota_us"), read(d / "cpu.cfs_period_us"))
            for d in own_cgroup_dirs()]


def cache_sizes(cache: Path = SYS_CPU / "cpu0/cache") -> list[str]:
    """The ``size`` of each cache of CPU 0 (or of the ``cache`` folder given): ``48K``, ``32768K``."""
    return [size for index in sorted(cache.glob("index*")) if (size := read(index / "size"))]


def core_siblings(cpu: int, sys_cpu: Path = SYS_CPU) -> str | None:
    """The CPUs sharing a physical core with ``cpu``, in the kernel's list format ("0,64"): its
    ``topology/core_cpus_list``, or ``thread_siblings_list`` on older kernels."""
    topology = sys_cpu / f"cpu{cpu}" / "topology"
    return read(topology / "core_cpus_list") or read(topology / "thread_siblings_list")


def smt_active() -> str | None:
    """``1`` when SMT (hyper-threading) is on, ``0`` when off."""
    return read(SYS_CPU / "smt/active")


def scaling_governor(cpu: int = 0) -> str | None:
    """A CPU's frequency governor (``performance``, ``powersave``, ...)."""
    return read(SYS_CPU / f"cpu{cpu}/cpufreq/scaling_governor")


def numa_node_entries() -> list[str]:
    """The names in /sys/devices/system/node (``node0``, ``node1``, ``online``, ...)."""
    try:
        return [entry.name for entry in SYS_NODE.iterdir()]
    except OSError:
        return []
