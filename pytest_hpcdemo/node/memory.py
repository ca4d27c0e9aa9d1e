"""Resident memory of the process tree, read from /proc: the peak of each side of a claim, and what
one process holds.

Peak: before each timed call the kernel's high-water mark of every process in the tree (this one,
pool workers, a local Ray cluster's raylet, workers and object store) is reset (``5`` written to
``/proc/PID/clear_refs``, Linux 4.0+); after it, each process's ``VmHWM`` is read. The sum is an
upper bound of the tree's peak (the processes may peak at different moments, and pages they share
count in each). Reset and read happen outside the timed call, so the timing is untouched. No
sampling thread: nothing runs beside the measured code. Processes that start and end inside one
call (a pool made and shut down within it) are not seen. Right after the reset each mark is the
process's resident size, so the sum then is what the tree held when the call began; the peak's
growth over it is the call's own memory, which the gate compares (the resident floor under the
peak depends on what else the session imported and ran before).

What one process holds: its unique pages (USS, ``/proc/PID/smaps_rollup``), which is what a pool
worker costs, and its anonymous pages (``RssAnon``), which is what a copy of data costs (pages of a
shared-memory block or of Ray's object store are ``RssShmem``, not anonymous).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.measure import Run, Timing, _descendant_pids
from ..core.procfs import private_kib, reset_peak, status_kib

MIB = 2**20


def tree(root: int | None = None) -> list[int]:
    """This process (or ``root``) and its live descendants."""
    root = os.getpid() if root is None else root
    return [root, *_descendant_pids(root)]


def reset_peaks(pids: Iterable[int]) -> bool:
    """Reset the resident high-water mark of each process; False where the kernel refuses."""
    return all([reset_peak(pid) for pid in pids])  # every one reset, even after a refusal


def peak_bytes(pids: Iterable[int]) -> int:
    """Sum of ``VmHWM`` over the processes (exited ones count 0)."""
    return sum(status_kib(pid, "VmHWM") or 0 for pid in pids) * 1024


def private_bytes(pid: int | str = "self") -> int | None:
    """Unique resident bytes of a process (USS: ``Private_Clean + Private_Dirty`` in smaps_rollup):
    what it costs beyond the pages it shares, copy-on-write ones from a fork included."""
    kib = private_kib(pid)
    return None if kib is None else kib * 1024


def anonymous_bytes(pid: int | str = "self") -> int | None:
    """Anonymous resident bytes of a process (``RssAnon``): what a private copy of data adds, where
    pages of a shared-memory block or of Ray's object store count as ``RssShmem`` instead."""
    kib = status_kib(pid, "RssAnon")
    return None if kib is None else kib * 1024


# Pool workers that must hold their data at the same moment (so that N tasks land on N distinct
# workers) wait on a barrier that their initializer stored here.
_barrier: Any = None


def join_barrier(barrier: Any) -> None:
    """A pool's ``initializer``: keep the pool's barrier for :func:`held_anonymous_bytes`."""
    global _barrier
    _barrier = barrier


def held_anonymous_bytes(data: Any, shared_name: str | None = None) -> tuple[int, int]:
    """(pid, anonymous bytes) of a pool worker while it holds ``data`` and has read every page of
    it, taken once every worker of the pool holds its own. With ``shared_name`` the data is the
    shape of a float64 array in that ``multiprocessing.shared_memory`` block, attached by name."""
    import numpy as np

    block = None
    if shared_name is not None:
        from multiprocessing import shared_memory

        block = shared_memory.SharedMemory(name=shared_name)
        data = np.ndarray(data, dtype=np.float64, buffer=block.buf)
    try:
        float(np.sum(data))  # every page read
        _barrier.wait(timeout=60)
        held = anonymous_bytes() or 0
        _barrier.wait(timeout=60)  # nobody lets go before everybody has read its figure
        return os.getpid(), held
    finally:
        del data
        if block is not None:
            block.close()


def supported() -> bool:
    """Whether this kernel lets this process reset and read its own high-water mark."""
    return status_kib(os.getpid(), "VmHWM") is not None and reset_peaks([os.getpid()])


@dataclass
class PeakMemory:
    """Per-call peaks of a claim's two sides. :meth:`run` wraps the meter's ``run``: the side is
    told by which of the two callables is being run."""

    baseline: Callable[[], object]
    candidate: Callable[[], object]
    enabled: bool = field(default_factory=supported)
    peaks: dict[str, list[int]] = field(default_factory=lambda: {"baseline": [], "candidate": []})
    growth: dict[str, list[int]] = field(default_factory=lambda: {"baseline": [], "candidate": []})

    def wrap(self, run: Run) -> Run:
        if not self.enabled:
            return run

        def tracked(fn: Callable[[], object]) -> Timing:
            side = "baseline" if fn is self.baseline else "candidate" if fn is self.candidate else None
            if side is None:
                return run(fn)
            pids = tree()
            reset_peaks(pids)
            resident = peak_bytes(pids)  # just reset: each high-water mark is its resident size now
            timing = run(fn)
            peak = peak_bytes(tree())
            self.peaks[side].append(peak)
            self.growth[side].append(max(0, peak - resident))
            return timing

        return tracked

    def figures(self) -> dict[str, object] | None:
        """The largest peak of each side, and each call's growth of the peak over what the tree
        held when the call began (what the gate compares, call by call, as it compares each
        round's time: the resident floor under it depends on what the session ran before, the
        growth is the call's own), for ``extra_info``; None when nothing was read."""
        if not (self.peaks["baseline"] and self.peaks["candidate"]):
            return None
        return {"baseline_peak_rss_bytes": max(self.peaks["baseline"]),
                "candidate_peak_rss_bytes": max(self.peaks["candidate"]),
                "baseline_rss_growth_per_call": list(self.growth["baseline"]),
                "candidate_rss_growth_per_call": list(self.growth["candidate"]),
                "method": "sum of VmHWM over this process and its live descendants, reset before each call"}


def figures_line(figures: dict[str, object] | None) -> str:
    """``peak RSS 120 / 310 MiB`` (baseline / candidate), or nothing."""
    if not figures:
        return ""
    base, cand = figures["baseline_peak_rss_bytes"], figures["candidate_peak_rss_bytes"]
    return f"peak RSS {int(base) / MIB:.0f} / {int(cand) / MIB:.0f} MiB"  # type: ignore[call-overload]
