"""Device-synchronised timing for GPU work, the GPU chapter's problem sizes, and the crossover size.

A GPU kernel launch returns before the kernel has run, so a host clock read right after it measures
the launch, not the work. :class:`DeviceClock` waits for the device before every reading: the span
between two readings covers all the work launched between them (synchronise before start, and
before stop). It is a plain ``() -> float`` clock, which is what pytest-benchmark takes as its timer
and :func:`measure.timed` as its clock, so GPU figures go through the same statistics as the rest.

No pytest and no CuPy import here: the array module comes in as an argument. NumPy needs no
synchronising (its calls return when the work is done), so the same code times both.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from itertools import pairwise
from types import ModuleType
from typing import Any

from ..core import measure

Run = measure.Run

# Problem sizes, fixed (never calibrated from a timing). Arrays of 2**25 float32 (128 MiB) are
# larger than any GPU's L2 cache and any CPU's last-level cache, so a pass over them measures
# memory bandwidth; a 2048 x 2048 float32 product is 17 GFLOP, work that dwarfs a launch.
STREAM_ELEMENTS = 2**25
MATMUL_N = 2048
# For results against a float64 reference: big enough for rounding to accumulate, quick on a CPU.
CHECK_ELEMENTS, CHECK_MATMUL_N = 2**20, 512
# The crossover sweep: matrix sides from a product a launch dominates to one the GPU must win.
CROSSOVER_SMALLEST, CROSSOVER_LARGEST = 8, 2048
# Calls before timing starts: the first compiles or loads the kernel and grows the memory pool;
# the others let the device's clocks leave their idle state.
WARMUP_CALLS = 3


def synchronizer(xp: ModuleType) -> Callable[[], object] | None:
    """How to wait for the work queued on ``xp``'s device: CuPy's device-wide synchronise (every
    stream of the current device); None for NumPy, whose calls return when their work is done."""
    cuda = getattr(xp, "cuda", None)
    return None if cuda is None else cuda.runtime.deviceSynchronize


def to_numpy(xp: ModuleType, array: Any) -> Any:
    """``array`` as a NumPy array on the host (a copy from the device for CuPy; as is for NumPy)."""
    asnumpy = getattr(xp, "asnumpy", None)
    return array if asnumpy is None else asnumpy(array)


class DeviceClock:
    """A clock that waits for the device before each reading.

    ``clock()`` synchronises, then reads ``time.perf_counter``: what is timed between two readings
    includes every kernel launched in between, finished. With no ``synchronize`` (NumPy) it is
    ``perf_counter``. pytest-benchmark stores the timer's ``__name__`` in its JSON options.
    """

    def __init__(self, synchronize: Callable[[], object] | None, label: str,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.synchronize = synchronize
        self.clock = clock
        self.__name__ = f"DeviceClock({label})"

    def __call__(self) -> float:
        if self.synchronize is not None:
            self.synchronize()
        return self.clock()

    def __repr__(self) -> str:
        return self.__name__


def device_run(clock: DeviceClock) -> Run:
    """A ``run`` for :func:`measure.measure` that times each call with ``clock``."""

    def run(fn: Callable[[], object]) -> measure.Timing:
        return measure.timed(fn, clock=clock)

    return run


def launch_run(synchronize: Callable[[], object], clock: Callable[[], float] = time.perf_counter) -> Run:
    """A ``run`` that times what a host clock alone sees: the window closes when the call returns,
    with its kernels possibly still queued. The device is drained outside the window, before and
    after, so that no window pays for work launched in another."""

    def run(fn: Callable[[], object]) -> measure.Timing:
        synchronize()
        timing = measure.timed(fn, clock=clock)
        synchronize()
        return timing

    return run


def geometric_sizes(smallest: int, largest: int, factor: int = 2) -> list[int]:
    """``smallest``, ``smallest * factor``, ... up to ``largest`` inclusive."""
    if smallest < 1 or largest < smallest or factor < 2:
        raise ValueError(f"need 1 <= smallest <= largest and factor >= 2; "
                         f"got {smallest}, {largest}, {factor}")
    sizes = [smallest]
    while sizes[-1] * factor <= largest:
        sizes.append(sizes[-1] * factor)
    return sizes


def crossover(sizes: Sequence[float], speedups: Sequence[float]) -> float | None:
    """The size from which the candidate is faster at every larger measured size.

    ``speedups[i]`` is baseline time / candidate time at ``sizes[i]`` (ascending). The crossing is
    interpolated on log-log axes between the last size where the candidate does not win
    (speedup <= 1) and the next one. None when there is no crossing inside the sweep: the candidate
    loses at the largest size, or already wins at every size.
    """
    if len(sizes) != len(speedups) or not sizes:
        raise ValueError(f"need one speedup per size; got {len(sizes)} sizes, {len(speedups)} speedups")
    if any(b <= a for a, b in pairwise(sizes)) or sizes[0] <= 0:
        raise ValueError(f"sizes must be positive and ascending; got {list(sizes)}")
    if any(not s > 0 for s in speedups):
        raise ValueError(f"speedups must be positive; got {list(speedups)}")
    losing = [i for i, s in enumerate(speedups) if s <= 1.0]
    if not losing or losing[-1] == len(sizes) - 1:
        return None
    i = losing[-1]
    low, high = math.log(sizes[i]), math.log(sizes[i + 1])
    r_low, r_high = math.log(speedups[i]), math.log(speedups[i + 1])
    return math.exp(low + (high - low) * -r_low / (r_high - r_low))


def bandwidth(nbytes: float, seconds: float) -> float:
    """Bytes per second, the figure a memory-bound claim is stated in."""
    return nbytes / seconds if seconds > 0 else math.inf
