"""The machine's own limits, measured in the session: memory bandwidth (STREAM-style copy and triad
with NumPy) and the pure-Python rate, on one core and on every usable core at once.

The all-core figures run one process per usable core, each on its own arrays, started together.
The ratio of the all-core to the one-core pure-Python rate is the process-pool ideal: the most a
process pool can give on this machine now. Bytes are counted as STREAM counts them (copy 16, triad
24 bytes per element); NumPy's triad takes two passes (``a = c * s``, ``a += b``), so its figure is a
lower bound of what the memory moves. Figures are the median of the timed repetitions after a
warm-up one. NumPy is imported inside the kernels only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..core import procfs
from ..core.measure import foreign_load, median, system_busy_seconds, tree_cpu_seconds

STREAM_BYTES_PER_ELEMENT = {"copy": 16, "triad": 24}
REPEATS = 7
PYTHON_ITERATIONS = 400_000  # ~0.03 s of workloads.cpu_bound per repetition here
MIN_ELEMENTS = 2**18  # 2 MiB arrays: still past the L2 of any core


def cache_bytes(sizes: Iterable[str] | None = None) -> int:
    """The largest of the cache ``sizes`` (``48K``, ``32M``; by default CPU 0's from /sys, so its
    last level), 32 MiB when none is known."""
    largest = 0
    for text in procfs.cache_sizes() if sizes is None else sizes:
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        largest = max(largest, int(text.rstrip("KMG")) * scale)
    return largest or 32 * 2**20


def stream_elements(processes: int, memory_bytes: int | None, last_level_cache: int) -> int:
    """float64 elements per array and process: the three arrays of all processes together span 8
    last-level caches (at least 192 MiB), so no process works from a cache, and take at most a
    sixteenth of the memory."""
    total = max(8 * last_level_cache, 192 * 2**20)
    if memory_bytes:
        total = min(total, memory_bytes // 16)
    return max(MIN_ELEMENTS, total // (3 * 8 * max(1, processes)))


def stream(elements: int, repeats: int = REPEATS) -> dict[str, float]:
    """Seconds per copy and per triad on arrays of ``elements`` float64 (median of ``repeats``)."""
    import numpy as np

    a, b, c = np.zeros(elements), np.ones(elements), np.full(elements, 2.0)

    def copy() -> None:
        np.copyto(a, b)

    def triad() -> None:
        np.multiply(c, 3.0, out=a)
        np.add(a, b, out=a)

    return {name: _median_seconds(kernel, repeats) for name, kernel in (("copy", copy), ("triad", triad))}


def python_seconds(iterations: int = PYTHON_ITERATIONS, repeats: int = REPEATS) -> float:
    """Seconds per ``workloads.cpu_bound(iterations)`` (median of ``repeats``)."""
    from ..core.workloads import cpu_bound

    return _median_seconds(lambda: cpu_bound(iterations), repeats)


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: page faults of fresh arrays, first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


_start: Any = None  # the barrier of a pool's workers, set by their initializer


def _join(barrier: Any) -> None:
    global _start
    _start = barrier


def _worker_probe(elements: int) -> tuple[dict[str, float], float]:
    """Both probes in a pool worker, once every worker is ready (so that all run at once)."""
    _start.wait(timeout=120)
    return stream(elements), python_seconds()


@dataclass(frozen=True)
class Limits:
    """Bytes per second (STREAM's count) and pure-Python iterations per second, one core and all."""

    processes: int
    copy_one: float
    triad_one: float
    copy_all: float
    triad_all: float
    python_one: float
    python_all: float
    elements_one: int
    elements_all: int
    foreign_load: float  # cores' worth of other processes' CPU meanwhile: the figures are theirs too

    @property
    def loaded(self) -> bool:
        """Other processes took more than half a core meanwhile (the gate's default busy load): the
        all-core figures are then what this session got, not what the machine can do."""
        return self.foreign_load > 0.5

    @property
    def pool_ideal(self) -> float:
        """The process-pool ideal: all cores' pure-Python rate over one core's."""
        return self.python_all / self.python_one

    def bandwidth_share(self, kernel: str) -> float:
        """All cores' bandwidth of a STREAM kernel as a fraction of ``processes`` times one core's:
        1 where memory keeps up with every core, 1/N where one core already takes all of it."""
        one, every = getattr(self, f"{kernel}_one"), getattr(self, f"{kernel}_all")
        return every / (self.processes * one) if one > 0 else math.nan

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "pool_ideal": self.pool_ideal,
                **{f"{k}_share_of_linear": self.bandwidth_share(k) for k in STREAM_BYTES_PER_ELEMENT}}

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> Limits:
        """Back from :meth:`as_dict` (a saved run's ``machine_info``); missing figures are NaN."""
        return cls(**{f.name: saved.get(f.name, math.nan) for f in fields(cls)})

    def lines(self) -> list[str]:
        gb = 1e9
        return [
            f"memory bandwidth (STREAM count, NumPy): copy {self.copy_one / gb:.1f} GB/s on 1 core, "
            f"{self.copy_all / gb:.1f} GB/s on {self.processes} ({self.bandwidth_share('copy'):.0%} of "
            f"{self.processes} x 1 core); triad {self.triad_one / gb:.1f} / {self.triad_all / gb:.1f} GB/s "
            f"({self.bandwidth_share('triad'):.0%})",
            f"pure Python: {self.python_one / 1e6:.1f} M iterations/s on 1 core, "
            f"{self.python_all / 1e6:.1f} M on {self.processes} processes: "
            f"process-pool ideal {self.pool_ideal:.2f}x; "
            f"foreign load {self.foreign_load:.2f} cores meanwhile"
            + ("; LOADED: the all-core figures are what other processes left, not this machine's limits"
               if self.loaded else ""),
        ]


def copy_rate(memory_bytes: int | None = None) -> float:
    """Bytes one core copies per second (STREAM's copy count halved: each byte is read and
    written), in this process: the yardstick of a transport that moves a message through memory."""
    elements = stream_elements(1, memory_bytes, cache_bytes())
    return rates(stream(elements), elements)["copy"] / 2


def rates(seconds: dict[str, float], elements: int) -> dict[str, float]:
    """Bytes per second of each STREAM kernel from its seconds per call."""
    return {k: STREAM_BYTES_PER_ELEMENT[k] * elements / s if s > 0 else math.nan for k, s in seconds.items()}


def measure_limits(processes: int, start_method: str, memory_bytes: int | None) -> Limits:
    """One core in this process, then ``processes`` processes at once (a fresh pool, started and
    warmed before the timed kernels run)."""
    import multiprocessing

    cache = cache_bytes()
    cpu0, busy0, t0 = tree_cpu_seconds(), system_busy_seconds(), time.perf_counter()
    one_elements = stream_elements(1, memory_bytes, cache)
    all_elements = stream_elements(processes, memory_bytes, cache)
    one = rates(stream(one_elements), one_elements)
    python_one = PYTHON_ITERATIONS / python_seconds()
    context = multiprocessing.get_context(start_method)
    barrier = context.Barrier(processes)
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_join, initargs=(barrier,)) as pool:
        results = list(pool.map(_worker_probe, [all_elements] * processes))
        cpu = tree_cpu_seconds() - cpu0  # before the pool's workers exit and leave the tree
    busy1 = system_busy_seconds()
    busy = None if busy0 is None or busy1 is None else busy1 - busy0
    load = foreign_load(busy, cpu, time.perf_counter() - t0)
    per_worker = [rates(s, all_elements) for s, _ in results]
    return Limits(
        processes=processes, copy_one=one["copy"], triad_one=one["triad"],
        copy_all=sum(r["copy"] for r in per_worker), triad_all=sum(r["triad"] for r in per_worker),
        python_one=python_one, python_all=sum(PYTHON_ITERATIONS / p for _, p in results),
        elements_one=one_elements, elements_all=all_elements,
        foreign_load=math.nan if load is None else load,
    )
