"""Resident memory of the process tree, read from /proc: the peak of each side of a claim, and what
a process privately holds.

Peak: before each timed call the kernel's high-water mark of every process in the tree (this one,
pool workers, a local Ray cluster's raylet, workers and object store) is reset (``5`` written to
``/proc/PID/clear_refs``, Linux 4.0+); after it, each process's ``VmHWM`` is read. The sum is an
upper bound of the tree's peak (the processes may peak at different moments, and pages they share
count in each). Reset and read happen outside the timed call, so the timing is untouched. No
sampling thread: nothing runs beside the measured code. Processes that start and end inside one
call (a pool made and shut down within it) are not seen.

Private memory (``/proc/PID/smaps_rollup``): the ``Private_*`` pages a process alone maps, which is
what a copy of data costs; pages of a shared-memory block a process only maps are not private.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .measure import Run, Timing, _descendant_pids

MIB = 2**20


def _status_kib(pid: int | str, key: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return None


def tree(root: int | None = None) -> list[int]:
    """This process (or ``root``) and its live descendants."""
    root = os.getpid() if root is None else root
    return [root, *_descendant_pids(root)]


def reset_peaks(pids: Iterable[int]) -> bool:
    """Reset the resident high-water mark of each process; False where the kernel refuses."""
    done = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except FileNotFoundError:
            continue  # exited meanwhile
        except OSError:
            done = False
    return done


def peak_bytes(pids: Iterable[int]) -> int:
    """Sum of ``VmHWM`` over the processes (exited ones count 0)."""
    return sum(_status_kib(pid, "VmHWM") or 0 for pid in pids) * 1024


def private_bytes(pid: int | str = "self") -> int | None:
    """Private resident bytes of a process (``Private_Clean + Private_Dirty`` in smaps_rollup)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total * 1024


def supported() -> bool:
    """Whether this kernel lets this process reset and read its own high-water mark."""
    return _status_kib(os.getpid(), "VmHWM") is not None and reset_peaks([os.getpid()])


@dataclass
class PeakMemory:
    """Per-call peaks of a claim's two sides. :meth:`run` wraps the meter's ``run``: the side is
    told by which of the two callables is being run."""

    baseline: Callable[[], object]
    candidate: Callable[[], object]
    enabled: bool = field(default_factory=supported)
    peaks: dict[str, list[int]] = field(default_factory=lambda: {"baseline": [], "candidate": []})

    def wrap(self, run: Run) -> Run:
        if not self.enabled:
            return run

        def tracked(fn: Callable[[], object]) -> Timing:
            side = "baseline" if fn is self.baseline else "candidate" if fn is self.candidate else None
            if side is None:
                return run(fn)
            reset_peaks(tree())
            timing = run(fn)
            self.peaks[side].append(peak_bytes(tree()))
            return timing

        return tracked

    def figures(self) -> dict[str, object] | None:
        """The largest peak of each side, for ``extra_info``; None when nothing was read."""
        if not (self.peaks["baseline"] and self.peaks["candidate"]):
            return None
        return {"baseline_peak_rss_bytes": max(self.peaks["baseline"]),
                "candidate_peak_rss_bytes": max(self.peaks["candidate"]),
                "method": "sum of VmHWM over this process and its live descendants, reset before each call"}


def figures_line(figures: dict[str, object] | None) -> str:
    """``peak RSS 120 / 310 MiB`` (baseline / candidate), or nothing."""
    if not figures:
        return ""
    base, cand = figures["baseline_peak_rss_bytes"], figures["candidate_peak_rss_bytes"]
    return f"peak RSS {int(base) / MIB:.0f} / {int(cand) / MIB:.0f} MiB"  # type: ignore[call-overload]
