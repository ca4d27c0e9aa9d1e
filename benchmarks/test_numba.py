"""Chapter "Numba" (an empty heading in the guide: these claims are ours).

One kernel throughout, the midpoint rule for pi (``workloads.pi_midpoint``): as pure Python,
compiled by Numba holding the GIL, releasing it, and with ``prange``, as NumPy expressions, and in
C. Compilation never lands in a timed call: the kernels are compiled before any timing
(``workloads.numba_kernel``), and compile costs are measured on their own, in fresh interpreters.
"""

from __future__ import annotations

import ctypes
import math
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_hpcdemo.backends.processes import make_process_pool_factory
from pytest_hpcdemo.backends.teardown import bounded
from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.core.measure import SINGLE_CORE_CEILING, Claim, at_least, at_most, scaling_floor
from pytest_hpcdemo.numba import support as numba_support

if TYPE_CHECKING:
    from pytest_hpcdemo.core.claims import SpeedupMeter
    from pytest_hpcdemo.core.hardware import Hardware

pytestmark = pytest.mark.numba

# Fixed sizes (never calibrated from a timing). Here: pure Python ~0.1 us per interval, Numba and C
# ~1.5 ns, so JIT_N is ~0.2 s of Python, THREAD_N ~30 ms compiled.
JIT_N = 2_000_000
THREAD_N = 20_000_000
NUMPY_N = 2_000_000  # 16 MB per temporary array: beyond the caches, as real arrays are
FIRST_CALL_N = 200_000  # a call of well under a millisecond, once compiled
C_SOURCE = Path(__file__).parent / "c_kernels" / "pi_midpoint.c"
# Claims whose rounds last ~0.1 s or less decide within a few rounds; half the budget keeps a
# loaded machine, where they end inconclusive, from holding the run for the whole extension.
SHORT_ROUNDS = 0.5

Kernel = Callable[[int], float]


@pytest.fixture(scope="module")
def kernels() -> dict[str, Kernel]:
    """Every Numba flavour of the kernel, compiled before any test times it."""
    return {flavour: workloads.numba_kernel(flavour) for flavour in workloads.NUMBA_FLAVOURS}


def parallel_workers(hardware: Hardware) -> int:
    workers = min(hardware.usable_cores, 4)
    if workers < 2:
        pytest.skip(f"needs 2 usable cores for a parallel claim; this session has {hardware.usable_cores}")
    return workers


def test_njit_speeds_up_a_python_loop(speedup, kernels: dict[str, Kernel]) -> None:
    """``@njit`` turns a pure-Python numeric loop into machine code that runs many times faster
    and computes the very same floats. "Many times" is read as an order of magnitude: the bound is
    10x (measured 65-109x here), the claim's own definition, not a figure of this machine."""
    njit = kernels["njit"]
    assert njit(JIT_N) == workloads.pi_midpoint(JIT_N)
    speedup(lambda: workloads.pi_midpoint(JIT_N), lambda: njit(JIT_N), [at_least("speedup", 10.0)],
            cores_needed=1, name="njit vs pure Python")


@pytest.fixture(scope="module")
def first_calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The same fresh-interpreter probe twice with one empty NUMBA_CACHE_DIR: compiles, then loads."""
    env = {"NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("numba-cache"))}
    cold = numba_support.run_probe("first-calls", FIRST_CALL_N, env)
    cached = numba_support.run_probe("first-calls", FIRST_CALL_N, env)
    return {"cold": cold, "cached": cached}


# Single-shot timings (one probe per process, not interleaved rounds): timing tests, which skip
# under pytest-xdist, where other workers would share the cores during the one shot.
@pytest.mark.timing
def test_first_call_pays_compilation(first_calls: dict[str, dict[str, Any]], claim) -> None:
    """The first call of a jitted function compiles it: in a fresh interpreter it costs far more
    than the steady state (at least 10x for this sub-millisecond call), and Numba's own compile-time
    accounting explains most of the difference. The first jitted call in a process also pays
    Numba's start-up, measured apart (a trivial function first). CPU times: immune to other load."""
    cold = first_calls["cold"]
    assert cold["cache_misses"] == 1 and cold["cache_hits"] == 0
    ratio = cold["first_cpu_s"] / cold["steady_cpu_s"]
    excess = cold["first_s"] - cold["steady_s"]
    claim(f"first call {cold['first_s'] * 1e3:.0f} ms vs steady {cold['steady_s'] * 1e3:.2f} ms "
          f"(CPU {ratio:.0f}x >= 10); Numba's compile time {cold['numba_compile_s'] * 1e3:.0f} ms; "
          f"start-up before it {cold['start_up_s']:.2f} s")
    assert ratio >= 10, f"the first call cost only {ratio:.1f}x the steady state"
    assert 0.5 * excess <= cold["numba_compile_s"] <= cold["first_s"], \
        f"Numba's compile time {cold['numba_compile_s']:.3f} s does not explain the extra {excess:.3f} s"


@pytest.mark.timing
def test_cache_removes_most_compile_time(first_calls: dict[str, dict[str, Any]], claim) -> None:
    """``cache=True`` writes the machine code to disk; a fresh process loads it instead of
    compiling, and its first call costs at most a quarter of the compiling one. What the cache does
    not remove is Numba's start-up: the first jitted call in a process still costs several times
    the cached load."""
    cold, cached = first_calls["cold"], first_calls["cached"]
    assert (cached["cache_hits"], cached["cache_misses"]) == (1, 0), "the cache was not loaded"
    share = cached["first_cpu_s"] / cold["first_cpu_s"]
    start_up = cached["start_up_cpu_s"] / cached["first_cpu_s"]
    claim(f"first call cached {cached['first_s'] * 1e3:.1f} ms vs compiling {cold['first_s'] * 1e3:.0f} ms "
          f"(CPU share {share:.2f} <= 0.25); start-up still {cached['start_up_s']:.2f} s "
          f"({start_up:.0f}x the cached load >= 5)")
    assert share <= 0.25, f"the cached first call still cost {share:.0%} of compiling"
    assert start_up >= 5, f"Numba's start-up was only {start_up:.1f}x the cached load"


def threads_claim(speedup: SpeedupMeter, workers: int, kernel: Kernel, claims: list[Claim],
                  name: str) -> None:
    """Serial calls of ``kernel`` against the same calls on ``workers`` threads."""
    with ThreadPoolExecutor(workers) as pool:
        def serial() -> None:
            for _ in range(workers):
                kernel(THREAD_N)

        def threaded() -> None:
            list(pool.map(kernel, [THREAD_N] * workers))

        speedup(serial, threaded, claims, cores_needed=workers, same_work=True, name=name,
                budget_factor=SHORT_ROUNDS)


def test_nogil_threads_scale(speedup, hardware, kernels: dict[str, Kernel]) -> None:
    """A ``nogil=True`` function releases the GIL while it runs, so N threads calling it run on N
    cores: the speedup and the effective parallelism both exceed the scaling floor. The threading
    chapter's "threads are for IO" stops being true."""
    workers = parallel_workers(hardware)
    floor = scaling_floor(min(workers, hardware.cpu_bound_cores))
    threads_claim(speedup, workers, kernels["nogil"],
                  [at_least("speedup", floor), at_least("parallelism", floor)],
                  f"nogil njit threads x{workers} vs serial")


def test_gil_holding_njit_threads_scale_only_without_the_gil(speedup, hardware,
                                                            kernels: dict[str, Kernel]) -> None:
    """The same compiled function without ``nogil`` holds the GIL throughout: where the GIL is on,
    N threads are no faster than serial and use one core, as pure Python does (test_gil.py).
    Compiling alone does not escape the GIL. Without the GIL (a free-threaded build) the claim
    flips: speedup and parallelism both reach the scaling floor."""
    workers = parallel_workers(hardware)
    if hardware.gil_enabled:
        claims = [at_most("speedup", SINGLE_CORE_CEILING), at_most("parallelism", SINGLE_CORE_CEILING)]
    else:
        claims = [at_least("speedup", scaling_floor(min(workers, hardware.cpu_bound_cores))),
                  at_least("parallelism", scaling_floor(workers))]
    threads_claim(speedup, workers, kernels["njit"], claims, f"GIL-holding njit threads x{workers} vs serial")


def test_prange_scales_with_cores(speedup, hardware, kernels: dict[str, Kernel], benchmark) -> None:
    """``parallel=True`` with ``prange`` splits the loop over Numba's threads: faster than the
    serial compiled loop by the scaling floor of min(usable cores, Numba's threads), with that
    parallelism. The sum's order changes, so the result agrees to rounding only."""
    import numba

    threads = min(hardware.usable_cores, numba.get_num_threads())
    if threads < 2:
        pytest.skip(f"needs 2 usable cores and Numba threads; this session has {hardware.usable_cores} "
                    f"cores, Numba {numba.get_num_threads()} threads")
    parallel, njit = kernels["parallel"], kernels["njit"]
    assert math.isclose(parallel(THREAD_N), njit(THREAD_N), rel_tol=1e-12)
    benchmark.extra_info["numba_threading_layer"] = numba.threading_layer()
    floor = scaling_floor(min(threads, hardware.cpu_bound_cores))
    speedup(lambda: njit(THREAD_N), lambda: parallel(THREAD_N),
            [at_least("speedup", floor), at_least("parallelism", floor)], cores_needed=threads,
            same_work=True, name=f"prange on {threads} threads vs serial njit", budget_factor=SHORT_ROUNDS)


def test_set_num_threads_limits_prange(speedup, hardware, kernels: dict[str, Kernel]) -> None:
    """``numba.set_num_threads(1)`` confines the next ``prange`` loops to one thread: one core's
    worth of CPU (about two, were it ignored on two cores)."""
    import numba

    threads = parallel_workers(hardware)
    parallel, njit = kernels["parallel"], kernels["njit"]
    default = numba.get_num_threads()

    def one_thread() -> None:
        numba.set_num_threads(1)
        try:
            parallel(THREAD_N)
        finally:
            numba.set_num_threads(default)

    # The cores must be free to tell: were the setting ignored, parallelism would need them all.
    speedup(lambda: njit(THREAD_N), one_thread, [at_most("parallelism", SINGLE_CORE_CEILING)],
            cores_needed=threads, same_work=True, name="prange after set_num_threads(1) vs serial njit",
            budget_factor=SHORT_ROUNDS)


def test_numba_num_threads_is_respected(hardware, claim) -> None:
    """``NUMBA_NUM_THREADS=1`` in the environment gives Numba one thread (read at import, so in a
    fresh interpreter): ``prange`` loops then use one core."""
    parallel_workers(hardware)
    result = numba_support.run_probe("threads", THREAD_N, {"NUMBA_NUM_THREADS": "1"})
    claim(f"NUMBA_NUM_THREADS=1: config {result['config_threads']}, get_num_threads "
          f"{result['get_num_threads']}, prange parallelism {result['parallelism']:.2f} <= "
          f"{SINGLE_CORE_CEILING} ({result['layer']} layer)")
    assert result["config_threads"] == result["get_num_threads"] == 1
    assert result["parallelism"] <= SINGLE_CORE_CEILING


def test_numba_loop_beats_numpy_expression(speedup, kernels: dict[str, Kernel]) -> None:
    """On arrays beyond the caches, one compiled loop beats the same formula as NumPy expressions,
    which make and traverse a temporary array per operation. "Beats" is the bound: the loop takes
    less time (speedup above 1; measured ~6x here)."""
    njit = kernels["njit"]
    assert math.isclose(njit(NUMPY_N), workloads.pi_midpoint_numpy(NUMPY_N), rel_tol=1e-12)
    speedup(lambda: workloads.pi_midpoint_numpy(NUMPY_N), lambda: njit(NUMPY_N), [at_least("speedup", 1.0)],
            cores_needed=1, name="njit loop vs NumPy expression", budget_factor=SHORT_ROUNDS)


@pytest.fixture(scope="module")
def c_kernel(tmp_path_factory: pytest.TempPathFactory) -> Kernel:
    """benchmarks/c_kernels/pi_midpoint.c built with the system compiler at -O2, through ctypes."""
    compiler = numba_support.c_compiler()
    if compiler is None:
        pytest.skip("no C compiler found (install gcc or clang, or set CC) for the Numba/C comparison")
    try:
        library = numba_support.build_shared_library(compiler, C_SOURCE, tmp_path_factory.mktemp("c"))
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"{' '.join(exc.cmd)} failed: {exc.stderr}", pytrace=False)
    function = ctypes.CDLL(str(library)).pi_midpoint
    function.restype, function.argtypes = ctypes.c_double, [ctypes.c_longlong]
    return function


def test_numba_is_within_2x_of_c(speedup, kernels: dict[str, Kernel], c_kernel: Kernel, benchmark) -> None:
    """Numba's machine code for the loop runs within 2x of the same loop in C at -O2 (both through
    LLVM or GCC, no fast-math), and computes exactly the same float."""
    njit = kernels["njit"]
    assert njit(THREAD_N) == c_kernel(THREAD_N)
    m = speedup(lambda: c_kernel(THREAD_N), lambda: njit(THREAD_N),
                [at_least("speedup", 0.5), at_most("speedup", 2.0)], cores_needed=1, name="njit vs C -O2",
                budget_factor=SHORT_ROUNDS)
    benchmark.extra_info["numba_over_c_time_ratio"] = 1.0 / float(m.figures()["speedup_median"])


def test_process_pool_works_after_parallel_code(pytestconfig, kernels: dict[str, Kernel], claim) -> None:
    """After Numba's parallel code ran in this process, a process pool with the session's start
    method still runs work, Numba's parallel kernel included (the fork trap, avoided)."""
    import numba

    expected = kernels["parallel"](JIT_N)
    method = pytestconfig.getoption("hpc_start_method")
    with bounded(make_process_pool_factory(method)(2)) as pool:
        numba_result = pool.submit(workloads.numba_pi_parallel, JIT_N)
        python_result = pool.submit(workloads.cpu_bound, 1000)
        assert math.isclose(numba_result.result(timeout=120), expected, rel_tol=1e-12)
        assert python_result.result(timeout=120) == workloads.cpu_bound(1000)
    claim(f"start method {method}, threading layer {numba.threading_layer()}: the pool ran prange and Python")


@pytest.mark.parametrize("layer, breaks", [("omp", True), ("forksafe", False)])
def test_fork_after_openmp_breaks_pools(layer: str, breaks: bool, claim) -> None:
    """The fork trap, shown in a fresh interpreter: after parallel code on GNU OpenMP (the ``omp``
    layer on Linux), a ``fork`` pool's worker that runs parallel code aborts and the pool breaks.
    With the ``forksafe`` layer, which the plugin picks under ``--hpc-start-method=fork``, it runs."""
    result = numba_support.run_probe("fork-after-parallel", JIT_N, {"NUMBA_THREADING_LAYER": layer})
    if layer == "omp" and result["openmp_vendor"] != "GNU":
        pytest.skip(f"the omp layer here is {result['openmp_vendor']} OpenMP, not GNU: no fork trap")
    claim(f"{layer} -> {result['layer']} layer: {result['outcome'][:60]}")
    if breaks:
        assert result["outcome"].startswith("BrokenProcessPool")
        assert "fork() called from a process already using GNU OpenMP" in result["stderr"]
    else:
        assert result["outcome"] == "ran"
