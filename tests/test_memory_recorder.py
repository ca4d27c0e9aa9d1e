"""Peak resident memory of the process tree and private memory, measured on real processes."""

from __future__ import annotations

import mmap
import multiprocessing
import time
from typing import Any

import pytest

from pytest_hpcdemo.core.measure import timed
from pytest_hpcdemo.node import memory

pytestmark = pytest.mark.skipif(not memory.supported(), reason="needs Linux's /proc/PID/clear_refs (4.0+)")

MIB = memory.MIB


def touched(mib: int) -> mmap.mmap:
    """``mib`` MiB of anonymous memory, every page written (so resident), straight from the kernel:
    the recorder is under test, not the allocator (the free-threaded build's mimalloc keeps freed
    memory resident, and hands out zeroed pages that are not resident until written)."""
    block = mmap.mmap(-1, mib * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, mib * MIB, mmap.PAGESIZE):
        block[offset] = 1
    return block


def allocate(mib: int) -> None:
    touched(mib).close()


def child_allocates(mib: int) -> None:
    """A child process that holds ``mib`` MiB for a moment: seen as a live descendant."""
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(mib, ready))
    proc.start()
    ready.wait(30)
    proc.join(30)


def _hold(mib: int, ready: Any) -> None:
    block = touched(mib)
    time.sleep(0.3)
    ready.set()
    time.sleep(0.2)
    block.close()


def test_peaks_are_reset_between_calls_and_told_apart_by_side() -> None:
    def baseline() -> None:
        allocate(1)

    def candidate() -> None:
        allocate(64)

    peaks = memory.PeakMemory(baseline, candidate)
    run = peaks.wrap(timed)
    for fn in (candidate, baseline, candidate, baseline):  # the big side first: resets must work
        run(fn)
    figures = peaks.figures()
    assert figures is not None
    extra = figures["candidate_peak_rss_bytes"] - figures["baseline_peak_rss_bytes"]
    assert 56 * MIB <= extra <= 80 * MIB
    assert memory.figures_line(figures).startswith("peak RSS ")


def test_a_child_that_ends_inside_the_call_is_not_seen() -> None:
    peaks = memory.PeakMemory(lambda: None, lambda: child_allocates(100))
    run = peaks.wrap(timed)
    run(peaks.baseline)
    # The child exits before the call returns: what counts is the parent's pages plus none of the
    # child's, so this shows the documented limit ("processes that end inside one call are not
    # seen") rather than pretending otherwise.
    run(peaks.candidate)
    figures = peaks.figures()
    assert figures is not None
    assert abs(figures["candidate_peak_rss_bytes"] - figures["baseline_peak_rss_bytes"]) < 50 * MIB


def test_anonymous_bytes_grow_with_a_private_copy() -> None:
    before = memory.anonymous_bytes()
    block = touched(50)
    after = memory.anonymous_bytes()
    block.close()
    assert before is not None and after is not None
    assert 45 * MIB <= after - before <= 60 * MIB


def test_unrelated_callables_are_run_untracked() -> None:
    peaks = memory.PeakMemory(lambda: None, lambda: None)
    peaks.wrap(timed)(lambda: None)
    assert peaks.figures() is None
