"""The GPU chapter's plugin without a GPU: the synchronised timer on a stand-in device, the sizes,
the crossover, GPU detection and skip reasons, the ``xp`` fixture on NumPy, and ``gpu_benchmark``
inside pytest-benchmark. The stand-in device lives here only, never in a benchmark."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from types import SimpleNamespace

# Imported at collection, before any in-process pytester session: a session that imports NumPy
# first would have it dropped from sys.modules afterwards, and NumPy cannot be loaded twice.
import numpy
import pytest

from pytest_hpcdemo.core import hardware, measure
from pytest_hpcdemo.core.hardware import CudaDevice, CudaRuntime, GpuInfo
from pytest_hpcdemo.gpu import timing


class StandInDevice:
    """The shape of CUDA's asynchrony on a virtual clock: a launch costs the host ``launch_s`` and
    queues ``seconds`` of device work; only ``synchronize`` makes the host wait for it."""

    def __init__(self, launch_s: float = 1e-5) -> None:
        self.now = 0.0  # the host's virtual time
        self.busy_until = 0.0  # when the queued device work will be done
        self.launch_s = launch_s
        self.syncs = 0

    def clock(self) -> float:
        return self.now

    def launch(self, seconds: float) -> None:
        self.now += self.launch_s
        self.busy_until = max(self.now, self.busy_until) + seconds

    def synchronize(self) -> None:
        self.syncs += 1
        self.now = max(self.now, self.busy_until)


def test_device_clock_waits_for_the_device_before_each_reading() -> None:
    device = StandInDevice()
    synced = timing.DeviceClock(device.synchronize, "stand-in", clock=device.clock)
    device.launch(0.5)  # work queued before the start reading belongs to nobody's window
    start, host_start = synced(), device.clock()
    device.launch(0.25)
    host_stop = device.clock()
    assert synced() - start == pytest.approx(0.25 + device.launch_s)
    assert host_stop - host_start == pytest.approx(device.launch_s)  # the host clock sees the launch
    assert device.syncs == 2 and repr(synced) == synced.__name__ == "DeviceClock(stand-in)"


def test_device_clock_without_a_device_is_the_host_clock() -> None:
    clock = timing.DeviceClock(None, "numpy")
    before = time.perf_counter()
    assert before <= clock() <= time.perf_counter()


def test_synchronizer_comes_from_the_array_module() -> None:

    device = StandInDevice()
    runtime = SimpleNamespace(deviceSynchronize=device.synchronize)
    module = SimpleNamespace(cuda=SimpleNamespace(runtime=runtime))
    assert timing.synchronizer(numpy) is None
    assert timing.synchronizer(module) == device.synchronize  # type: ignore[arg-type]


def test_device_run_times_the_work_and_launch_run_the_launch() -> None:
    device = StandInDevice()
    clock = timing.DeviceClock(device.synchronize, "stand-in", clock=device.clock)
    assert timing.device_run(clock)(lambda: device.launch(0.5)).wall == pytest.approx(0.5 + device.launch_s)
    device.launch(1.0)  # left queued: launch_run drains it before its window opens
    launched = timing.launch_run(device.synchronize, clock=device.clock)(lambda: device.launch(0.5))
    assert launched.wall == pytest.approx(device.launch_s)
    assert device.now == device.busy_until  # drained after the window: the next one starts idle


def test_interleaved_measurement_sees_launches_as_asynchronous() -> None:
    """The launch-only claim of the chapter, end to end through measure.measure on the stand-in."""
    device = StandInDevice()

    def launch() -> None:
        device.launch(0.01)

    def work() -> None:
        launch()
        device.synchronize()

    m = measure.measure("launch", work, launch, [measure.at_least("speedup", 10)], cores_needed=1,
                        usable_cores=1, clock=device.clock,
                        run=timing.launch_run(device.synchronize, clock=device.clock))
    assert m.verdict is measure.Verdict.HOLDS
    assert m.figures()["speedup_median"] == pytest.approx((0.01 + device.launch_s) / device.launch_s)


def test_geometric_sizes() -> None:
    assert timing.geometric_sizes(8, 2048) == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    assert timing.geometric_sizes(10, 99, factor=3) == [10, 30, 90]
    largest = timing.CROSSOVER_LARGEST
    assert timing.geometric_sizes(timing.CROSSOVER_SMALLEST, largest)[-1] == largest
    with pytest.raises(ValueError):
        timing.geometric_sizes(0, 10)
    with pytest.raises(ValueError):
        timing.geometric_sizes(4, 2)


@pytest.mark.parametrize(
    "speedups, expected",
    [
        ([0.1, 0.5, 2.0, 8.0], 2 ** (1 + math.log(2) / math.log(4))),  # log-log between 2 and 4
        ([0.5, 1.0, 4.0, 9.0], 2.0),  # exactly 1 at size 2: a tie is not a win, the crossing is there
        ([0.5, 3.0, 0.9, 2.0], 4 * 2 ** (math.log(1 / 0.9) / math.log(2 / 0.9))),  # the last loss counts
        ([0.1, 0.2, 0.5, 0.9], None),  # never wins
        ([1.5, 2.0, 3.0, 4.0], None),  # always wins: no crossing inside the sweep
    ],
)
def test_crossover(speedups: list[float], expected: float | None) -> None:
    size = timing.crossover([1, 2, 4, 8], speedups)
    if expected is None:
        assert size is None
    else:
        assert size == pytest.approx(expected)


def test_crossover_rejects_bad_input() -> None:
    for sizes, speedups in [([1, 2], [1.0]), ([2, 1], [0.5, 2.0]), ([1, 2], [0.0, 2.0]), ([], [])]:
        with pytest.raises(ValueError):
            timing.crossover(sizes, speedups)


def test_to_numpy_and_bandwidth() -> None:

    a = numpy.arange(3)
    assert timing.to_numpy(numpy, a) is a
    device = SimpleNamespace(asnumpy=lambda arr: ("host", arr))
    assert timing.to_numpy(device, a) == ("host", a)  # type: ignore[arg-type]
    assert timing.bandwidth(2e9, 0.5) == 4e9 and timing.bandwidth(1.0, 0.0) == math.inf


# --- detection -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, version",
    [
        ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.82.07  Wed Aug 13 2025\nGCC ...", "580.82.07"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.133.20  Release Build", "570.133.20"),
        ("something else entirely", "?"),
    ],
)
def test_parse_driver_version(text: str, version: str) -> None:
    assert hardware.parse_driver_version(text) == version


def test_parse_smi_devices() -> None:
    out = "NVIDIA H100 80GB HBM3, 81559 MiB, 9.0\n\nTesla T4, 15360 MiB, 7.5\n"
    assert hardware.parse_smi_devices(out) == (
        "NVIDIA H100 80GB HBM3 (81559 MiB, compute capability 9.0)",
        "Tesla T4 (15360 MiB, compute capability 7.5)",
    )


class CUDARuntimeError(RuntimeError):
    """What CuPy raises on device calls without a driver or device."""


def stand_in_cupy(**runtime: object) -> SimpleNamespace:
    return SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(**runtime)))


def _raise(message: str):
    def fail(*_: object) -> int:
        raise CUDARuntimeError(message)

    return fail


def test_probe_cuda_without_a_driver_never_raises() -> None:
    cupy = stand_in_cupy(getDeviceCount=_raise("cudaErrorInsufficientDriver: CUDA driver version is "
                                               "insufficient for CUDA runtime version"))
    probe = hardware.probe_cuda(cupy)  # type: ignore[arg-type]
    assert probe.devices == () and probe.error is not None
    assert probe.error.startswith("CUDARuntimeError: cudaErrorInsufficientDriver")
    assert probe.summary().startswith("CuPy cannot use a GPU: CUDARuntimeError")


def test_probe_cuda_with_no_device() -> None:
    probe = hardware.probe_cuda(stand_in_cupy(getDeviceCount=lambda: 0))  # type: ignore[arg-type]
    assert probe.error == "CUDA reports no device"


def test_probe_cuda_reports_devices_and_versions() -> None:
    props = [
        {"name": b"NVIDIA H100 80GB HBM3", "major": 9, "minor": 0, "totalGlobalMem": 85_029_158_912},
        {"name": b"NVIDIA A100-SXM4-40GB", "major": 8, "minor": 0, "totalGlobalMem": 42_298_834_944},
    ]
    cupy = stand_in_cupy(getDeviceCount=lambda: 2, getDeviceProperties=props.__getitem__,
                         driverGetVersion=lambda: 13000, runtimeGetVersion=lambda: 13020)
    probe = hardware.probe_cuda(cupy)  # type: ignore[arg-type]
    assert probe.error is None and (probe.driver_version, probe.runtime_version) == (13000, 13020)
    assert probe.devices[0] == CudaDevice("NVIDIA H100 80GB HBM3", "9.0", 85_029_158_912)
    assert probe.summary() == (
        "CUDA driver 13.0, runtime 13.2; "
        "device 0: NVIDIA H100 80GB HBM3 (compute capability 9.0, 79.2 GiB); "
        "device 1: NVIDIA A100-SXM4-40GB (compute capability 8.0, 39.4 GiB)"
    )


def test_cuda_runtime_without_cupy_says_so() -> None:
    if hardware.detect_gpu().cupy:
        pytest.skip("CuPy is installed here")
    hardware.cuda_runtime.cache_clear()
    assert hardware.cuda_runtime().error.startswith("import cupy failed: ModuleNotFoundError")  # type: ignore[union-attr]


def test_detect_gpu_never_raises() -> None:
    info = hardware.detect_gpu()
    assert info.usable is (info.missing_reason is None)


# --- the plugin through pytester ---------------------------------------------------------------


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """Install a GPU situation of our choosing for in-process pytester runs: the driver's view
    (GpuInfo) and, where that shows a GPU, CuPy's (CudaRuntime)."""

    def install(gpu_info: GpuInfo, runtime: CudaRuntime | None = None) -> None:
        fake = dataclasses.replace(hardware.detect("forkserver"), gpu=gpu_info)
        monkeypatch.setattr(hardware, "detect_cached", lambda start_method=None: fake)
        if runtime is not None:
            monkeypatch.setattr(hardware, "cuda_runtime", lambda: runtime)

    return install


H100 = GpuInfo("14.2.0", "580.82.07", ("NVIDIA H100 80GB HBM3 (81559 MiB, compute capability 9.0)",))
XP_SUITE = """
import pytest

def test_xp(xp):
    assert xp.asarray([1, 2]).sum() == 3

@pytest.mark.gpu
def test_gpu_only():
    pass
"""


@pytest.mark.parametrize(
    "gpu_info, runtime, reason",
    [
        (GpuInfo(None, None), None,
         "no usable GPU: CuPy is not installed (pip install 'pytest-hpcdemo[gpu]')"),
        (GpuInfo("14.2.0", None), None, "no usable GPU: no NVIDIA driver is loaded on this machine"),
        (GpuInfo("14.2.0", "580.82.07"), None, "no usable GPU: the NVIDIA driver reports no GPU device"),
        (H100, CudaRuntime(error="CUDARuntimeError: cudaErrorInsufficientDriver"),
         "no usable GPU: CuPy 14.2.0 cannot use it: CUDARuntimeError: cudaErrorInsufficientDriver"),
    ],
    ids=["no-cupy", "no-driver", "no-device", "cupy-unable"],
)
def test_xp_runs_numpy_and_gpu_tests_skip_with_the_reason(
    pytester: pytest.Pytester, machine, gpu_info: GpuInfo, runtime: CudaRuntime | None, reason: str
) -> None:
    machine(gpu_info, runtime)
    pytester.makepyfile(XP_SUITE)
    result = pytester.runpytest("-rs", "-v")
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines([
        "hpcdemo: gpu tests will be skipped: " + reason.replace("[", "?").replace("]", "?"),
        "*test_xp?numpy? PASSED*",
        "*test_xp?cupy? SKIPPED*",
    ])
    assert str(result.stdout).count(reason) == 2  # after collection, and the skips (counted together)


def test_cuda_line_after_collection_when_a_gpu_is_usable(pytester: pytest.Pytester, machine) -> None:
    runtime = CudaRuntime(13000, 13020, (CudaDevice("NVIDIA H100 80GB HBM3", "9.0", 85_029_158_912),))
    machine(H100, runtime)
    pytester.makepyfile("import pytest\n@pytest.mark.gpu\ndef test_g(): pass\n")
    result = pytester.runpytest("--collect-only", "-o", "hpcdemo=true")  # opted in: the header first
    result.stdout.fnmatch_lines([
        "hpcdemo: gpu: cupy 14.2.0, NVIDIA driver 580.82.07: NVIDIA H100 80GB HBM3 (81559 MiB, "
        "compute capability 9.0)",
        "*collected 1 item*",
        "hpcdemo: gpu: CUDA driver 13.0, runtime 13.2; device 0: NVIDIA H100 80GB HBM3 "
        "(compute capability 9.0, 79.2 GiB)",
    ])


def test_no_cuda_line_without_a_gpu_test(pytester: pytest.Pytester, machine) -> None:
    machine(GpuInfo(None, None))
    pytester.makepyfile("def test_a(): pass\n")
    assert "gpu tests will be skipped" not in str(pytester.runpytest().stdout)


# A stand-in GPU array module in real time: launches queue work, synchronise sleeps until it is done.
STAND_IN_CONFTEST = """
import time
from types import SimpleNamespace

import pytest


class Device:
    def __init__(self):
        self.busy_until = 0.0
        self.compiled = False

    def launch(self, seconds):
        if not self.compiled:  # the first call compiles: a cost the warm-up must keep out
            self.compiled, seconds = True, seconds + 0.5
        self.busy_until = max(time.perf_counter(), self.busy_until) + seconds

    def synchronize(self):
        while (delay := self.busy_until - time.perf_counter()) > 0:
            time.sleep(delay)


@pytest.fixture
def device():
    return Device()


@pytest.fixture
def xp(device):
    return SimpleNamespace(__name__="standin", launch=device.launch,
                           cuda=SimpleNamespace(runtime=SimpleNamespace(deviceSynchronize=device.synchronize)))
"""

STAND_IN_BENCHMARKS = """
import pytest

WORK = 0.002

@pytest.mark.benchmark(group="stand-in")
def test_synchronised(gpu_benchmark, xp):
    gpu_benchmark(xp.launch, WORK)

def test_unsynchronised(benchmark, xp):
    benchmark(xp.launch, WORK)
"""


def test_gpu_benchmark_times_the_device_work_inside_pytest_benchmark(pytester: pytest.Pytester) -> None:
    """pytest-benchmark's own rounds, timed by the synchronised clock, see every launch's work;
    its default timer sees only the launches. The first call's compile cost stays in the warm-up."""
    pytester.makeconftest(STAND_IN_CONFTEST)
    pytester.makepyfile(STAND_IN_BENCHMARKS)
    result = pytester.runpytest("-p", "no:xdist", "--benchmark-json=out.json", "--benchmark-max-time=0.05",
                                "--benchmark-min-rounds=5")
    result.assert_outcomes(passed=2)
    benches = {b["name"]: b for b in json.loads((pytester.path / "out.json").read_text())["benchmarks"]}
    synced, unsynced = benches["test_synchronised"], benches["test_unsynchronised"]
    assert synced["stats"]["min"] >= 0.002, "the synchronised clock must see each call's device work"
    assert synced["stats"]["max"] < 0.25, "the compile cost must stay in the warm-up"
    assert synced["options"]["timer"] == "DeviceClock(standin)" and synced["group"] == "stand-in"
    assert unsynced["stats"]["median"] < 0.001, "pytest-benchmark's host timer sees the launch only"


def test_gpu_benchmark_speedup_records_an_entry_and_a_claim(pytester: pytest.Pytester, machine) -> None:
    machine(GpuInfo(None, None))
    pytester.makeconftest(STAND_IN_CONFTEST)
    pytester.makepyfile("""
from pytest_hpcdemo.core.measure import at_least

def test_launch(gpu_benchmark, xp):
    '''Launches return before the work is done.'''
    def work():
        xp.launch(0.004)
        gpu_benchmark.synchronize()
    gpu_benchmark.speedup(work, lambda: xp.launch(0.004), [at_least("speedup", 4)], launch_only=True,
                          name="sync vs launch")
""")
    result = pytester.runpytest("-p", "no:xdist", "--benchmark-json=out.json", "--hpc-budget=0.2")
    result.assert_outcomes(passed=1)
    # the figures wrap at 120 columns
    result.stdout.fnmatch_lines(["HOLDS*test_launch*", "*sync vs launch: speedup * >= 4; * rounds*"])
    data = json.loads((pytester.path / "out.json").read_text())
    (bench,) = data["benchmarks"]
    figures = bench["extra_info"]["claims"]["sync vs launch"]
    assert bench["stats"]["rounds"] == figures["rounds"] and figures["verdict"] == "holds"
    assert data["machine_info"]["hpcdemo_gpu"]["missing"].startswith("no usable GPU")


def test_gpu_benchmark_is_timing_sensitive(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STAND_IN_CONFTEST)
    pytester.makepyfile("from pytest_hpcdemo.core.markers import marker\n"
                        "def test_t(gpu_benchmark, xp, request):\n"
                        "    assert marker(request.node, 'timing')\n")
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)
