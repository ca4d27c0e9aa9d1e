"""The GPU chapter's fixtures and hooks: ``xp``, ``gpu_benchmark``, the CUDA line and machine_info.

``xp`` is the array module a claim is written against: NumPy always, CuPy as a ``gpu``-marked
parameter, skipped with the reason where no usable GPU is. ``gpu_benchmark`` times with the
device-synchronised clock of timing.py, so a GPU benchmark is an ordinary pytest-benchmark entry.
Only pytest and the standard library are imported here at start-up; CuPy only once a GPU test runs
on a machine whose driver shows a GPU.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from ..core.fixtures import open_claim
from ..core.session import claim_log, hardware_of, options_of
from ..core.usage import in_use

if TYPE_CHECKING:
    from ..core.benchmark_compat import BenchmarkFixture
    from ..core.claims import SpeedupMeter
    from ..core.measure import Claim, Measurement, Run
    from .timing import DeviceClock

# Both parameters always exist, so that test ids (and saved benchmark names) are the same on every
# machine; the CuPy one is marked hpc_gpu after collection (not at import, where the marker is not
# registered yet), which skips it with its reason where it cannot run.
ARRAY_MODULES = ("numpy", "cupy")


@pytest.fixture(params=ARRAY_MODULES)
def xp(request: pytest.FixtureRequest) -> ModuleType:
    """The array module of this run of the test: ``numpy``, then ``cupy`` where a GPU is usable."""
    return importlib.import_module(request.param)


class GpuBenchmark:
    """Timing of device work inside a pytest-benchmark entry.

    ``gpu_benchmark(fn, *args)``: explicit warm-up calls (kernel compile, first launch, memory pool),
    then pytest-benchmark's own calibration and rounds, timed by the device-synchronised clock.
    ``gpu_benchmark.speedup(baseline, candidate, claims, name=...)``: an interleaved measurement
    with a verdict, like the ``speedup`` fixture (the same meter), but timed by that clock; its
    candidate's samples become the benchmark entry. One of the two per test, as pytest-benchmark
    allows one entry.
    """

    def __init__(self, meter: SpeedupMeter, clock: DeviceClock, benchmark: BenchmarkFixture) -> None:
        self.meter = meter
        self.clock = clock
        self.benchmark = benchmark

    @property
    def extra_info(self) -> dict[str, Any]:
        return self.benchmark.extra_info

    def synchronize(self) -> None:
        """Wait for the work queued on the device (nothing to wait for on NumPy)."""
        self.clock()

    def warm_up(self, *calls: Callable[[], object]) -> None:
        """Run each call ``timing.WARMUP_CALLS`` times and wait: compile and first-launch costs stay out."""
        from .timing import WARMUP_CALLS

        for call in calls:
            for _ in range(WARMUP_CALLS):
                call()
        self.synchronize()

    def __call__(self, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        self.warm_up(lambda: fn(*args, **kwargs))
        result = self.benchmark(fn, *args, **kwargs)
        self.synchronize()  # pytest-benchmark's last, untimed call may still be running
        return result

    def _run(self, launch_only: bool) -> Run:
        """Each call timed by the device-synchronised clock; with ``launch_only``, by the host clock
        alone (the device drained between windows), which is what an unsynchronised timing sees."""
        from .timing import device_run, launch_run

        return launch_run(self.synchronize) if launch_only else device_run(self.clock)

    def measure(self, baseline: Callable[[], object], candidate: Callable[[], object],
                claims: Sequence[Claim], *, name: str, launch_only: bool = False,
                budget_factor: float = 1.0) -> Measurement:
        """Interleaved rounds (after :meth:`warm_up`) until the claims are decided, without
        asserting or recording. ``budget_factor`` scales ``--hpc-budget``."""
        self.warm_up(baseline, candidate)
        return self.meter.measure(baseline, candidate, claims, name=name, budget_factor=budget_factor,
                                  run=self._run(launch_only))

    def speedup(self, baseline: Callable[[], object], candidate: Callable[[], object],
                claims: Sequence[Claim], *, name: str, launch_only: bool = False,
                budget_factor: float = 1.0) -> Measurement:
        """:meth:`measure`, :meth:`record`, a line in the claim summary, then the verdict asserted."""
        self.warm_up(baseline, candidate)
        return self.meter(baseline, candidate, claims, name=name, budget_factor=budget_factor,
                          run=self._run(launch_only))

    def record(self, m: Measurement) -> None:
        """The candidate's samples become this test's benchmark entry; the figures go in extra_info."""
        self.meter.record(m)

    def note(self, line: str, verdict: str | None = None) -> None:
        """A line (figures) on this test's entry in the claim summary."""
        self.meter.log.record(self.meter.nodeid, line, verdict)


def _array_module(request: pytest.FixtureRequest) -> ModuleType:
    """The test's ``xp``, or CuPy for a test without one (skipped with the reason when unusable)."""
    if "xp" in request.fixturenames:
        return request.getfixturevalue("xp")
    from ..core.markers import gpu_skip_reason

    reason = gpu_skip_reason(hardware_of(request.config))
    if reason:
        pytest.skip(reason)
    return importlib.import_module("cupy")


@pytest.fixture
def gpu_benchmark(request: pytest.FixtureRequest) -> GpuBenchmark:
    """Device-synchronised benchmarking of the array module's work (see :class:`GpuBenchmark`).
    Do not request ``benchmark`` as well: this fixture makes it, with its own timer."""
    from ..core.claims import SpeedupMeter
    from .timing import DeviceClock, synchronizer

    xp = _array_module(request)
    clock = DeviceClock(synchronizer(xp), xp.__name__)
    # pytest-benchmark's documented way to set a test's timer is its marker: ours goes first (the
    # closest), with the test's own options kept.
    marker = request.node.get_closest_marker("benchmark")
    options = {**(marker.kwargs if marker else {}), "timer": clock}
    request.node.add_marker(pytest.mark.benchmark(**options), append=False)
    benchmark = request.getfixturevalue("benchmark")
    from functools import partial

    from ..report.progress import Progress

    meter = SpeedupMeter(request.node.nodeid, hardware_of(request.config),
                         options_of(request.config).measure_settings, benchmark, claim_log(request.config),
                         partial(Progress, request.config, request.node.nodeid))
    open_claim(request)
    return GpuBenchmark(meter, clock, benchmark)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_use(config):
        from ..core.markers import mark_parametrized

        mark_parametrized(items, "xp", "cupy", pytest.mark.hpc_gpu)


def pytest_report_collectionfinish(config: pytest.Config, items: Sequence[pytest.Item]) -> list[str]:
    """Once a gpu test is selected: CuPy's CUDA versions and devices, or why the gpu tests skip."""
    from ..core.markers import marker

    if not any(marker(item, "gpu") for item in items):
        return []
    from ..core.hardware import cuda_runtime
    from ..core.markers import gpu_skip_reason

    reason = gpu_skip_reason(hardware_of(config))
    if reason:
        return [f"hpcdemo: gpu tests will be skipped: {reason}"]
    return [f"hpcdemo: gpu: {cuda_runtime().summary()}"]


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, object]) -> None:
    """CuPy's view of the GPUs in saved runs (the driver's view is in ``hpcdemo``); asks CuPy only
    where the driver shows a GPU."""
    from ..core import figures
    from ..core.hardware import cuda_runtime
    from ..core.markers import gpu_skip_reason

    reason = gpu_skip_reason(hardware_of(config))
    machine_info[figures.GPU] = {"missing": reason} if reason else asdict(cuda_runtime())

