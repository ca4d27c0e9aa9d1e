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


# A claim whose candidate allocates MIB_PER_CALL MiB, every page written, in a real measurement;
# its time is scripted (the memory is under test), so the timing series never decide the gate.
GATED = """
import mmap
from pytest_hpcdemo.core import measure
from pytest_hpcdemo.core.measure import at_least

MIB_PER_CALL = {mib}

def allocate(mib):
    block = mmap.mmap(-1, mib * 2**20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, mib * 2**20, mmap.PAGESIZE):
        block[offset] = 1
    block.close()

def timed(fn):
    fn()
    return measure.Timing(0.02 if fn is baseline else 0.01, 0.0, None)

def baseline():
    allocate(4)

def candidate():
    allocate(MIB_PER_CALL)

def test_allocates(speedup):
    speedup(baseline, candidate, [at_least("speedup", 1.2)], run=timed, cores_needed=0, name="copy")
"""
GATE = ("-p", "no:xdist", "--hpc-gate", "--hpc-gate-busy=64")


def test_the_gate_flags_a_planted_memory_regression_and_not_an_unchanged_rerun(pytester: pytest.Pytester
                                                                               ) -> None:
    """Saved with a 32 MiB copy per call; rerun unchanged: its memory is unchanged; rerun with a
    64 MiB copy (a copy more): the candidate side's memory regresses and fails the session, the
    baseline side's does not. Real allocations, real /proc readings, separate sessions."""
    pytester.makeini("[pytest]\nhpcdemo = true\n")
    pytester.makepyfile(test_mem=GATED.format(mib=32))
    assert pytester.runpytest_subprocess(*GATE, "--benchmark-autosave").ret == 0
    same = pytester.runpytest_subprocess(*GATE)
    same.stdout.no_fnmatch_line("REGRESSED*peak RSS growth*")
    assert same.ret == 0
    pytester.makepyfile(test_mem=GATED.format(mib=64))
    more = pytester.runpytest_subprocess(*GATE, "-v")
    assert more.ret == pytest.ExitCode.TESTS_FAILED
    more.stdout.fnmatch_lines(["REGRESSED     test_mem.py::test_allocates [[]copy] peak RSS growth "
                               "(candidate): median peak RSS growth 3*.* MiB -> 6*.* MiB* vs * calls*"
                               "lower is better*memory_floor*"])
    more.stdout.no_fnmatch_line("REGRESSED*peak RSS growth (baseline)*")
