"""What this machine and session have, detected once, lazily, and without importing heavy backends.

Every backend is probed by package metadata, environment variables and files under /proc and /sys,
so that a session that selects no GPU, MPI, Ray or Numba test never imports CuPy, mpi4py, Ray or
Numba. The probes that do need an import (NumPy's BLAS pools) run only when asked for.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType

from . import procfs

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")

_DIST_INFO = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+?)\.(?:dist|egg)-info$")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@cache
def installed_versions() -> dict[str, str]:
    """Distribution name -> version, from the *.dist-info folder names on sys.path.

    One directory listing per path entry: much cheaper than importlib.metadata, which parses each
    package's METADATA file, and it is what keeps the plugin's start-up cost near zero.
    """
    versions: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for item in names:
            match = _DIST_INFO.match(item)
            if match:
                versions.setdefault(_normalise(match["name"]), match["version"])
    return versions


def package_version(name: str) -> str | None:
    """The installed version of a distribution, without importing it."""
    return installed_versions().get(_normalise(name))


def parse_cgroup_quota(cpu_max: str | None, cfs_quota: str | None, cfs_period: str | None) -> float | None:
    """Cores allowed by a cgroup quota: v2 ``cpu.max`` ("max 100000" or "150000 100000") or v1 files."""
    if cpu_max:
        quota, _, period = cpu_max.partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    if cfs_quota and cfs_period and int(cfs_quota) > 0:
        return int(cfs_quota) / int(cfs_period)
    return None


def cgroup_cpu_quota() -> float | None:
    """The tightest CPU quota (in cores) that applies to this process, or None when unlimited."""
    quotas = [q for files in procfs.cgroup_cpu_limits() if (q := parse_cgroup_quota(*files)) is not None]
    return min(quotas) if quotas else None


def usable_cores_from(affinity: int, quota: float | None) -> int:
    """Cores a parallel claim may count on: the affinity mask, cut by a quota (rounded down, at least 1)."""
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.floor(quota)))


def affinity_cpus() -> set[int]:
    """The CPUs this process may run on (every CPU where the platform cannot say)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def parse_cpu_list(text: str) -> set[int]:
    """The kernel's CPU list format ("0-3,8,10-11") as a set of CPU numbers."""
    cpus: set[int] = set()
    for part in filter(None, text.strip().split(",")):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def physical_cores_in(cpus: set[int], sys_cpu: Path = procfs.SYS_CPU) -> int:
    """How many physical cores the CPUs in ``cpus`` sit on: SMT siblings (hyper-threads) share one.

    From each CPU's topology/core_cpus_list (thread_siblings_list on older kernels), restricted to
    ``cpus``; a CPU whose topology cannot be read counts as a core of its own (no SMT assumed).
    """
    cores: set[frozenset[int]] = set()
    for cpu in cpus:
        text = procfs.core_siblings(cpu, sys_cpu)
        try:
            siblings = parse_cpu_list(text) & cpus if text else set()
        except ValueError:
            siblings = set()
        cores.add(frozenset(siblings or {cpu}))
    return max(1, len(cores))


def _memory_bytes() -> int | None:
    total_kib = procfs.meminfo_kib("MemTotal")
    if total_kib is not None:
        return total_kib * 1024
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def gil_state() -> tuple[bool, bool]:
    """(free-threaded build, GIL enabled now). An extension module can re-enable the GIL at run time."""
    free_threaded_build = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    gil_enabled = True if is_enabled is None else bool(is_enabled())
    return free_threaded_build, gil_enabled


def numba_threading_layer_used() -> str | None:
    """The threading layer Numba loaded (tbb, omp, workqueue), known only once a parallel function
    ran in this process; None before that or when Numba was never imported (it is not imported here)."""
    numba = sys.modules.get("numba")
    if numba is None:
        return None
    try:
        return str(numba.threading_layer())
    except ValueError:  # no parallel function has run yet
        return None


@dataclass(frozen=True)
class MpiInfo:
    mpi4py: str | None
    mpich: str | None
    launcher: str | None  # which launcher's variables are set, None outside mpirun
    world_size: int
    rank: int
    mpirun: str | None  # path of an mpirun on PATH or beside this interpreter
    local_size: int = 1  # ranks on this node: more than the usable cores is oversubscription

    @property
    def launched(self) -> bool:
        return self.launcher is not None


def beside_python(name: str) -> str | None:
    """The program ``name`` installed beside this interpreter (a venv's bin, where the mpich and ray
    wheels put theirs), else the one on PATH; None when there is neither."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def detect_mpi(environ: Mapping[str, str] | None = None) -> MpiInfo:
    """The launcher's variables (pytest_hpcdemo.mpi.launch.LAUNCHER_VARS) and the installed packages."""
    from ..mpi.launch import launch_of

    launch = launch_of(os.environ if environ is None else environ)
    mpirun = beside_python("mpirun")
    if launch is None:
        return MpiInfo(package_version("mpi4py"), package_version("mpich"), None, 1, 0, mpirun)
    return MpiInfo(package_version("mpi4py"), package_version("mpich"), launch.launcher, launch.size,
                   launch.rank, mpirun, launch.local_size)


@dataclass(frozen=True)
class GpuInfo:
    """What the driver's files and nvidia-smi say, without importing CuPy (cheap: fit for the header)."""

    cupy: str | None
    driver: str | None  # NVIDIA kernel driver version, None when no driver is loaded
    devices: tuple[str, ...] = ()  # "name (memory, compute capability x.y)" per device

    @property
    def usable(self) -> bool:
        return self.cupy is not None and bool(self.devices)

    @property
    def missing_reason(self) -> str | None:
        if self.cupy is None:
            return "CuPy is not installed (pip install 'pytest-hpcdemo[gpu]')"
        if self.driver is None:
            return "no NVIDIA driver is loaded on this machine"
        if not self.devices:
            return "the NVIDIA driver reports no GPU device"
        return None


CUPY_DISTRIBUTIONS = ("cupy", "cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy-rocm-6-0")
_DRIVER_VERSION = re.compile(r"Kernel Module\b.*?\s(\d+\.\d+(?:\.\d+)?)\s")


def _cupy_version() -> str | None:
    return next(filter(None, map(package_version, CUPY_DISTRIBUTIONS)), None)


def parse_driver_version(text: str) -> str:
    """The version in /proc/driver/nvidia/version (proprietary or open kernel module); "?" if absent."""
    match = _DRIVER_VERSION.search(text)
    return match[1] if match else "?"


def parse_smi_devices(csv: str) -> tuple[str, ...]:
    """nvidia-smi's "name, memory.total, compute_cap" lines as "name (memory, compute capability x.y)"."""
    devices = []
    for line in filter(None, map(str.strip, csv.splitlines())):
        name, _, rest = line.partition(", ")
        memory, _, capability = rest.partition(", ")
        devices.append(f"{name} ({memory}, compute capability {capability})" if capability else line)
    return tuple(devices)


def detect_gpu() -> GpuInfo:
    """GPUs through the driver's files and nvidia-smi: never imports CuPy, never raises."""
    cupy = _cupy_version()
    driver_text = procfs.nvidia_driver_version()
    if driver_text is None:
        return GpuInfo(cupy, None)
    devices: tuple[str, ...] = ()
    smi = shutil.which("nvidia-smi")
    if smi:
        import subprocess

        try:
            devices = parse_smi_devices(subprocess.run(
                [smi, "--query-gpu=name,memory.total,compute_cap", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout)
        except (OSError, subprocess.SubprocessError):
            devices = ()
    if not devices:  # no nvidia-smi in this image, or it failed: the device files still count
        devices = tuple(sorted(p.name for p in Path("/dev").glob("nvidia[0-9]*")))
    return GpuInfo(cupy, parse_driver_version(driver_text), devices)


def cuda_version_text(version: int) -> str:
    """CUDA's integer versions (13000, 12020) as "13.0", "12.2"."""
    return f"{version // 1000}.{version % 1000 // 10}"


@dataclass(frozen=True)
class CudaDevice:
    name: str
    compute_capability: str
    memory_bytes: int

    def __str__(self) -> str:
        memory = f"{self.memory_bytes / 2**30:.1f} GiB"
        return f"{self.name} (compute capability {self.compute_capability}, {memory})"


@dataclass(frozen=True)
class CudaRuntime:
    """What CuPy itself reports: needs ``import cupy``, so it is probed only once a GPU test runs."""

    driver_version: int | None = None  # the CUDA version the driver supports (cudaDriverGetVersion)
    runtime_version: int | None = None  # the CUDA runtime CuPy runs on (cudaRuntimeGetVersion)
    devices: tuple[CudaDevice, ...] = ()
    error: str | None = None  # why CuPy cannot use a GPU here, None when it can

    def summary(self) -> str:
        if self.error:
            return f"CuPy cannot use a GPU: {self.error}"
        versions = "CUDA driver {}, runtime {}".format(
            *(cuda_version_text(v) if v else "?" for v in (self.driver_version, self.runtime_version))
        )
        return f"{versions}; " + "; ".join(f"device {i}: {d}" for i, d in enumerate(self.devices))


def probe_cuda(cupy: ModuleType) -> CudaRuntime:
    """Ask an imported CuPy for its devices and CUDA versions; never raises. Without a driver or a
    device, CuPy's runtime calls raise (CUDARuntimeError, a RuntimeError): that becomes the error."""
    try:
        runtime = cupy.cuda.runtime
        count = runtime.getDeviceCount()
        if count < 1:
            return CudaRuntime(error="CUDA reports no device")
        devices = []
        for index in range(count):
            props = runtime.getDeviceProperties(index)
            name = props["name"]
            devices.append(CudaDevice(name.decode() if isinstance(name, bytes) else str(name),
                                      f"{props['major']}.{props['minor']}", int(props["totalGlobalMem"])))
        return CudaRuntime(runtime.driverGetVersion(), runtime.runtimeGetVersion(), tuple(devices))
    except Exception as exc:  # CUDARuntimeError, CUDADriverError, a missing CUDA library: all mean "no"
        return CudaRuntime(error=f"{type(exc).__name__}: {exc}")


@cache
def cuda_runtime() -> CudaRuntime:
    """CuPy's view of the GPUs, imported and probed once per process; never raises."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return CudaRuntime(error=f"import cupy failed: {type(exc).__name__}: {exc}")
    return probe_cuda(cupy)


@dataclass(frozen=True)
class Hardware:
    """The facts a claim's thresholds derive from."""

    usable_cores: int
    logical_cores: int
    affinity_cores: int
    cgroup_quota: float | None
    memory_bytes: int | None
    free_threaded_build: bool
    gil_enabled: bool
    python: str
    start_method: str
    thread_env: dict[str, str] = field(default_factory=dict)
    numpy: str | None = None
    numba: str | None = None
    numba_threading_layer: str = "default"
    ray: str | None = None
    ray_address: str | None = None
    mpi: MpiInfo | None = None
    gpu: GpuInfo | None = None
    physical_cores: int = 0  # physical cores within the affinity set (0: not detected, as logical)

    @property
    def smt_siblings(self) -> bool:
        """Some usable CPUs are SMT siblings (hyper-threads) of others: they share a core."""
        return 0 < self.physical_cores < self.affinity_cores

    @property
    def cpu_bound_cores(self) -> int:
        """Cores that can deliver CPU-bound work at the same time: physical cores within the
        affinity set, cut by a cgroup quota. What CPU-bound scaling thresholds count; SMT siblings
        share one core's execution units, so two of them do not give twice the work."""
        return usable_cores_from(self.physical_cores or self.affinity_cores, self.cgroup_quota)

    def as_dict(self) -> dict[str, object]:
        info = asdict(self)
        info["cpu_bound_cores"] = self.cpu_bound_cores
        return info

    def blas_pools(self) -> list[dict[str, object]]:
        """NumPy's BLAS/OpenMP thread pools (imports NumPy; call only when NumPy is wanted)."""
        import numpy  # noqa: F401  (load NumPy's BLAS so that threadpoolctl sees it)
        from threadpoolctl import threadpool_info

        return [
            {k: p.get(k) for k in ("internal_api", "num_threads", "version", "threading_layer")}
            for p in threadpool_info()
        ]


def detect(start_method: str | None = None) -> Hardware:
    cpus = affinity_cpus()
    affinity = len(cpus)
    quota = cgroup_cpu_quota()
    free_threaded_build, gil_enabled = gil_state()
    return Hardware(
        usable_cores=usable_cores_from(affinity, quota),
        logical_cores=os.cpu_count() or 1,
        affinity_cores=affinity,
        cgroup_quota=quota,
        memory_bytes=_memory_bytes(),
        free_threaded_build=free_threaded_build,
        gil_enabled=gil_enabled,
        python=sys.version.split()[0],
        start_method=start_method or "default",
        thread_env={k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ},
        numpy=package_version("numpy"),
        numba=package_version("numba"),
        numba_threading_layer=os.environ.get("NUMBA_THREADING_LAYER", "default"),
        ray=package_version("ray"),
        ray_address=os.environ.get("RAY_ADDRESS"),
        mpi=detect_mpi(),
        gpu=detect_gpu(),
        physical_cores=physical_cores_in(cpus),
    )


@cache
def detect_cached(start_method: str | None = None) -> Hardware:
    return detect(start_method)
