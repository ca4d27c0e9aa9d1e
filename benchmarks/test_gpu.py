"""Chapter "CuPy", measured. The guide's chapter is an empty heading: these claims are ours.

GPU kernel launches are asynchronous, so only a synchronised timer sees the work; on data that
lives on the device, large elementwise and matrix work beats NumPy on the CPU with the same
results; moving data between host and device is the cost, so below some size NumPy wins; an
elementwise kernel runs at memory speed; a fused custom kernel beats a chain of built-in ones.

Tests that take ``xp`` are written once and run on NumPy everywhere (CI) and on CuPy where a GPU
is; the others are marked ``gpu`` and skip with the reason elsewhere. Every GPU figure is a ratio
of two timings on the same machine; none is compared with a number from another card.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pytest_hpcdemo.core.measure import Verdict, at_least, at_most
from pytest_hpcdemo.gpu import timing as gpu

# Unit roundoff of float32: a correctly rounded operation is off by at most this, relatively.
U32 = float(np.finfo(np.float32).eps) / 2
# Our claims' thresholds, stated here because no card's specification sets them:
GPU_FLOOR = 2.0  # GPU over NumPy on large resident data: less would not pay for moving the data
LAUNCH_SHARE = 0.1  # an unsynchronised timing sees at most a tenth of the work: "far less"
BANDWIDTH_SHARE = 0.5  # an elementwise add reaches at least half a copy's bandwidth
TRANSFER_SHARE = 0.5  # a host-device transfer reaches at most half a device-to-device copy's
TIMER_AGREEMENT = 1.25  # our clock and cupyx's CUDA events at most 25% apart on a long kernel
LONG_KERNEL_N = 4096  # a 4096^2 product is ~137 GFLOP: launch and synchronise latencies vanish in it
# Bytes each operation moves per element, in units of one array: copy reads 1 and writes 1, add
# reads 2 and writes 1; sqrt(x*x + y*y) from built-ins is 4 kernels over 9 array passes, fused 3.
COPY_PASSES, ADD_PASSES, CHAIN_PASSES, FUSED_PASSES = 2, 3, 9, 3


def fresh_data(*shapes: tuple[int, ...]) -> tuple[int, list[np.ndarray]]:
    """Random float32 arrays from a new seed each run (returned, so a failure can be replayed)."""
    seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]  (an int when drawn)
    rng = np.random.default_rng(seed)
    return seed, [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]


def hypot(xp: ModuleType, x: Any, y: Any) -> Any:
    return xp.sqrt(x * x + y * y)


def rounding_units(got: np.ndarray, reference: np.ndarray, scale: np.ndarray) -> float:
    """The largest error of ``got``, in float32 roundoffs of ``scale`` (float64 arithmetic)."""
    error = np.abs(got.astype(np.float64) - reference.astype(np.float64))
    return float(np.max(error / (U32 * scale.astype(np.float64))))


def test_float32_results_match_a_float64_reference(xp: ModuleType, claim: Callable[[str], None]) -> None:
    """Float32 elementwise and matrix work on this array module agrees with a float64 NumPy
    reference within float32 rounding, on fresh random data: sqrt(x*x + y*y) to 4 roundoffs
    (four operations, no cancellation), an n x n product to n + 1 roundoffs of |A||B| (the
    textbook bound for a dot product). A card that quietly computed in TF32 would fail."""
    n = gpu.CHECK_MATMUL_N
    seed, (x, y, a, b) = fresh_data((gpu.CHECK_ELEMENTS,), (gpu.CHECK_ELEMENTS,), (n, n), (n, n))
    x64, y64, a64, b64 = (v.astype(np.float64) for v in (x, y, a, b))
    exact = hypot(np, x64, y64)
    elementwise = rounding_units(gpu.to_numpy(xp, hypot(xp, xp.asarray(x), xp.asarray(y))), exact, exact)
    product = gpu.to_numpy(xp, xp.asarray(a) @ xp.asarray(b))
    matmul = rounding_units(product, a64 @ b64, np.abs(a64) @ np.abs(b64))
    claim(f"{xp.__name__}: sqrt(x*x + y*y) off by {elementwise:.2f} roundoffs (bound 4), "
          f"{n}x{n} product by {matmul:.1f} (bound {n + 1}); seed {seed}")
    assert elementwise <= 4, f"elementwise result off by {elementwise:.2f} float32 roundoffs; seed {seed}"
    assert matmul <= n + 1, f"matrix product off by {matmul:.1f} roundoffs of |A||B|; seed {seed}"


def test_elementwise_add_runs_at_memory_speed(xp: ModuleType, gpu_benchmark: Any) -> None:
    """An elementwise add over arrays far larger than any cache runs at memory speed: its
    bandwidth is at least half that of a copy on the same memory (device-to-device on a GPU).
    Bandwidth = bytes moved / time, so the claim on the time ratio copy / add is
    BANDWIDTH_SHARE * COPY_PASSES / ADD_PASSES."""
    n = gpu.STREAM_ELEMENTS
    a, b = xp.ones(n, dtype=xp.float32), xp.full(n, 2.0, dtype=xp.float32)
    out = xp.empty_like(a)
    m = gpu_benchmark.speedup(lambda: xp.copyto(out, a), lambda: xp.add(a, b, out=out),
                              [at_least("speedup", BANDWIDTH_SHARE * COPY_PASSES / ADD_PASSES)],
                              name=f"{xp.__name__}: add vs copy of {n} float32")
    figures = m.figures()
    nbytes = n * np.dtype(np.float32).itemsize
    copy_bw = gpu.bandwidth(COPY_PASSES * nbytes, float(np.median(figures["baseline_s"])))
    add_bw = gpu.bandwidth(ADD_PASSES * nbytes, float(np.median(figures["candidate_s"])))
    gpu_benchmark.extra_info.update(copy_GBps=copy_bw / 1e9, add_GBps=add_bw / 1e9,
                                    bandwidth_fraction=add_bw / copy_bw)
    gpu_benchmark.note(f"add {add_bw / 1e9:.1f} GB/s = {add_bw / copy_bw:.2f} of copy "
                       f"{copy_bw / 1e9:.1f} GB/s")


@pytest.mark.gpu
def test_kernel_launches_are_asynchronous(gpu_benchmark: Any) -> None:
    """A CuPy call returns when its kernel is queued, not when it has run: a host clock without a
    device synchronise measures at most a tenth of a large matrix product's time."""
    import cupy

    _, (a,) = fresh_data((LONG_KERNEL_N, LONG_KERNEL_N))
    d = cupy.asarray(a)

    def launch() -> None:
        d @ d

    def work() -> None:
        launch()
        gpu_benchmark.synchronize()

    gpu_benchmark.speedup(work, launch, [at_least("speedup", 1 / LAUNCH_SHARE)], launch_only=True,
                          name=f"{LONG_KERNEL_N}^2 matmul: host clock with / without synchronise")


@pytest.mark.gpu
def test_device_clock_agrees_with_cupyx_profiler(gpu_benchmark: Any) -> None:
    """The synchronised clock that times pytest-benchmark's rounds agrees with CUDA events
    (``cupyx.profiler.benchmark``'s GPU times) on a kernel long enough that launch latency is noise."""
    import cupy
    from cupyx.profiler import benchmark as cupyx_benchmark

    _, (a,) = fresh_data((LONG_KERNEL_N, LONG_KERNEL_N))
    d = cupy.asarray(a)

    def product() -> None:
        d @ d

    def by_events() -> np.ndarray:
        return cupyx_benchmark(product, n_repeat=100, n_warmup=gpu.WARMUP_CALLS).gpu_times.ravel()

    before = by_events()  # events before and after ours, so that a drift of the card's clocks
    gpu_benchmark(product)  # during the test moves both figures alike
    after = by_events()
    if gpu_benchmark.benchmark.disabled:
        pytest.skip("benchmarks are disabled (--benchmark-disable): no rounds to compare")
    ours = gpu_benchmark.benchmark.stats.stats.median
    events = float(np.median(np.concatenate([before, after])))
    ratio = ours / events
    gpu_benchmark.extra_info.update(cuda_events_median_s=events, clock_to_events=ratio)
    gpu_benchmark.note(f"device clock {ours * 1e3:.3f} ms vs CUDA events {events * 1e3:.3f} ms: "
                       f"ratio {ratio:.3f} (within {TIMER_AGREEMENT:g}x)")
    assert 1 / TIMER_AGREEMENT <= ratio <= TIMER_AGREEMENT, f"clocks disagree: ratio {ratio:.3f}"


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["elementwise", "matmul"])
def test_gpu_beats_numpy_on_large_work(gpu_benchmark: Any, kind: str) -> None:
    """Large elementwise (sqrt(x*x + y*y)) and matrix work on data resident on the GPU is at least
    GPU_FLOOR times faster than NumPy on the CPU, and its results equal NumPy's within float32
    rounding on fresh random data."""
    import cupy

    if kind == "elementwise":
        seed, (x, y) = fresh_data((gpu.STREAM_ELEMENTS,), (gpu.STREAM_ELEMENTS,))

        def run(xp: ModuleType, p: Any, q: Any) -> Any:
            return hypot(xp, p, q)

        bound, scale = 8.0, np.abs(hypot(np, x, y))  # each side within 4 roundoffs of the truth
    else:
        seed, (x, y) = fresh_data((gpu.MATMUL_N, gpu.MATMUL_N), (gpu.MATMUL_N, gpu.MATMUL_N))

        def run(xp: ModuleType, p: Any, q: Any) -> Any:
            return p @ q

        bound, scale = 2.0 * (gpu.MATMUL_N + 1), np.abs(x) @ np.abs(y)
    dx, dy = cupy.asarray(x), cupy.asarray(y)
    units = rounding_units(cupy.asnumpy(run(cupy, dx, dy)), run(np, x, y), scale)
    gpu_benchmark.note(f"results within {units:.2f} roundoffs of NumPy's (bound {bound:g}); seed {seed}")
    assert units <= bound, f"GPU and NumPy results differ by {units:.2f} roundoffs; seed {seed}"
    gpu_benchmark.speedup(lambda: run(np, x, y), lambda: run(cupy, dx, dy), [at_least("speedup", GPU_FLOOR)],
                          name=f"{kind}: GPU vs NumPy")


@pytest.mark.gpu
@pytest.mark.parametrize("direction", ["to_device", "to_host"])
def test_transfers_are_slower_than_device_memory(gpu_benchmark: Any, direction: str) -> None:
    """Moving an array between host and device (pageable NumPy memory, as most code has) is slower
    than moving it within device memory: the transfer's bandwidth is at most half a
    device-to-device copy's. The bandwidth both ways is recorded."""
    import cupy

    n = gpu.STREAM_ELEMENTS
    host = np.ones(n, dtype=np.float32)
    device, target = cupy.asarray(host), cupy.empty(n, dtype=cupy.float32)

    def transfer() -> None:
        if direction == "to_device":
            device.set(host)
        else:
            device.get(out=host)

    # copy / transfer time; the copy moves COPY_PASSES arrays, the transfer one.
    m = gpu_benchmark.speedup(lambda: cupy.copyto(target, device), transfer,
                              [at_most("speedup", TRANSFER_SHARE * COPY_PASSES)],
                              name=f"{direction} vs device copy of {n} float32")
    figures = m.figures()
    nbytes = n * host.itemsize
    transfer_bw = gpu.bandwidth(nbytes, float(np.median(figures["candidate_s"])))
    copy_bw = gpu.bandwidth(COPY_PASSES * nbytes, float(np.median(figures["baseline_s"])))
    gpu_benchmark.extra_info.update(transfer_GBps=transfer_bw / 1e9, copy_GBps=copy_bw / 1e9)
    gpu_benchmark.note(f"{direction} {transfer_bw / 1e9:.1f} GB/s; device copy {copy_bw / 1e9:.1f} GB/s")


def _matmul_sides(n: int) -> tuple[Callable[[], object], Callable[[], object]]:
    """NumPy's product of host matrices, and the GPU's with both transfers counted."""
    import cupy

    _, (a, b) = fresh_data((n, n), (n, n))
    return (lambda: a @ b), (lambda: cupy.asnumpy(cupy.asarray(a) @ cupy.asarray(b)))


@pytest.mark.gpu
def test_numpy_wins_below_a_crossover_size(gpu_benchmark: Any) -> None:
    """Once transfers are counted (host matrices in, host result out), NumPy wins on small matrix
    products and the GPU on large ones: the crossover lies inside the sweep, and is recorded."""
    sizes = gpu.geometric_sizes(gpu.CROSSOVER_SMALLEST, gpu.CROSSOVER_LARGEST)
    speedups, verdicts = [], []
    for n in sizes:
        numpy_side, gpu_side = _matmul_sides(n)
        m = gpu_benchmark.measure(numpy_side, gpu_side, [at_least("speedup", 1.0)], budget_factor=0.2,
                                  name=f"n={n}: GPU with transfers vs NumPy")
        speedups.append(float(m.figures()["speedup_median"]))
        verdicts.append(m.verdict)
    gpu_benchmark.record(m)  # the largest size's GPU samples are this test's benchmark entry
    size = gpu.crossover(sizes, speedups)
    gpu_benchmark.extra_info.update(sizes=sizes, gpu_speedups=speedups, crossover_n=size)
    sweep = ", ".join(f"{n}: {s:.2g}" for n, s in zip(sizes, speedups, strict=True))
    gpu_benchmark.note(f"crossover at n = {size:.0f}" if size else "no crossover inside the sweep")
    gpu_benchmark.note(f"GPU speedup by matrix side: {sweep}")
    ends = {sizes[0]: (verdicts[0], Verdict.FAILS), sizes[-1]: (verdicts[-1], Verdict.HOLDS)}
    if any(got is Verdict.INCONCLUSIVE for got, _ in ends.values()):
        pytest.skip(f"inconclusive at an end of the sweep: {sweep}")
    wrong = [f"n={n}" for n, (got, wanted) in ends.items() if got is not wanted]
    assert not wrong and size is not None, f"no crossover inside the sweep ({', '.join(wrong)}): {sweep}"


@pytest.mark.gpu
def test_fused_kernel_beats_a_chain_of_builtins(gpu_benchmark: Any) -> None:
    """An ``ElementwiseKernel`` computing sqrt(x*x + y*y) in one pass beats the same expression
    from built-in operations (four kernels, three temporaries): it moves 3 arrays instead of 9, and
    the claim is at least half that gain, with equal results."""
    import cupy

    kernel = cupy.ElementwiseKernel("float32 x, float32 y", "float32 z", "z = sqrt(x * x + y * y)",
                                    "hpcdemo_hypot")
    seed, (x, y) = fresh_data((gpu.STREAM_ELEMENTS,), (gpu.STREAM_ELEMENTS,))
    dx, dy = cupy.asarray(x), cupy.asarray(y)
    out = cupy.empty_like(dx)
    builtin = cupy.asnumpy(hypot(cupy, dx, dy))
    units = rounding_units(cupy.asnumpy(kernel(dx, dy, out)), builtin, np.abs(builtin))
    assert units <= 8, f"fused and built-in results differ by {units:.2f} roundoffs; seed {seed}"
    ideal = CHAIN_PASSES / FUSED_PASSES
    gpu_benchmark.speedup(lambda: hypot(cupy, dx, dy), lambda: kernel(dx, dy, out),
                          [at_least("speedup", 1 + (ideal - 1) / 2)], name="fused kernel vs built-in chain")
