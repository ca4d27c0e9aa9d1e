"""The claim summary counts apart what held, failed, stayed undecided (noise or load), was not run
or broke; --hpc-strict turns undecided claims that lean to failing into a failed session."""

from __future__ import annotations

import pytest

from pytest_hpcdemo.report.claims import ClaimLog

# Scripted calls (the plugin's summary is under test, not a machine): the baseline's calls
# alternate between 10 and 30 ms (``walls``) against the candidate's 20, so per-round speedups
# alternate 0.5 and 1.5 and, over up to 60 rounds, a bound between them is never decided. The median
# is 1.0 after an even number of rounds and the first value's after an odd one (the rounds' count
# depends on real time), so a test chooses the order that keeps it on the side of the bound it needs.
STRADDLING = """
import itertools
import time
from pytest_hpcdemo.core.measure import Timing, at_least

def straddle(speedup, threshold, name, walls=(0.01, 0.03)):
    walls = itertools.cycle(walls)

    def baseline(): pass

    def candidate(): pass

    def run(fn):
        wall = next(walls) if fn is baseline else 0.02
        return Timing(wall, 0.0, 0.0)

    speedup(baseline, candidate, [at_least("speedup", threshold)], cores_needed=0, name=name, run=run)
"""

HOLDING = """
def test_holds(speedup):
    def baseline(): pass

    def candidate(): pass

    def run(fn):
        return Timing(0.02 if fn is baseline else 0.01, 0.0, 0.0)

    speedup(baseline, candidate, [at_least("speedup", 1.3)], cores_needed=0, name="half", run=run)
"""

FAST = ("-p", "no:xdist", "--hpc-budget=0.3")


def test_skips_for_missing_hardware_are_not_run_and_crashes_are_errors(pytester: pytest.Pytester) -> None:
    """A claim skipped by a marker is "not run", never "inconclusive"; one whose pool worker died
    before any measurement (BrokenProcessPool) is an error with the exception, not "fails"."""
    pytester.makepyfile("""
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
import pytest

@pytest.mark.cores(999)
def test_needs_many_cores(claim):
    '''Scales to 999 cores.'''
    claim("never measured")

def test_worker_dies(claim):
    '''A pool computes.'''
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        pool.submit(os._exit, 3).result()

def test_refuted(claim):
    '''Two and two make five.'''
    assert 2 + 2 == 5
""")
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(skipped=1, failed=2)
    result.stdout.fnmatch_lines([
        "NOT RUN*test_needs_many_cores*",  # long test ids: the figures wrap onto the next line
        "*needs 999 usable cores*",
        "ERROR*test_worker_dies*",
        "*error: BrokenProcessPool: *",
        "FAILS*test_refuted*",
        "claims: 1 fails, 1 not run, 1 error",
    ])


def test_strict_fails_a_session_whose_undecided_claim_leans_to_failing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(STRADDLING + "\ndef test_leaning(speedup):\n    straddle(speedup, 1.25, 'leaning')\n")
    relaxed = pytester.runpytest(*FAST)
    relaxed.assert_outcomes(skipped=1)
    assert relaxed.ret == pytest.ExitCode.OK
    relaxed.stdout.fnmatch_lines(["INCONCLUSIVE*test_leaning*", "*would likely decide it*",
                                  "claims: 1 inconclusive (noise)"])
    strict = pytester.runpytest(*FAST, "--hpc-strict")
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["--hpc-strict: *test_leaning stayed inconclusive with its median on the "
                                 "failing side of its bound"])


def test_strict_fails_a_session_with_too_many_undecided_claims(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(STRADDLING + HOLDING + "\ndef test_undecided(speedup):\n"
                                               "    straddle(speedup, 0.8, 'u', walls=(0.03, 0.01))\n")
    strict = pytester.runpytest(*FAST, "--hpc-strict")
    strict.assert_outcomes(passed=1, skipped=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["--hpc-strict: 1 of 2 claims stayed undecided, more than the 25% allowed*"])
    lenient = pytester.runpytest(*FAST, "--hpc-strict", "--hpc-strict-undecided=0.5")
    assert lenient.ret == pytest.ExitCode.OK


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_strict_undecided_share_is_checked(pytester: pytest.Pytester, value: str) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest(f"--hpc-strict-undecided={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hpc-strict-undecided: *"])


def test_counts_keep_load_apart_from_noise() -> None:
    log = ClaimLog()
    for name, verdict, cause in [("a", "holds", ""), ("b", "inconclusive", "load"),
                                 ("c", "inconclusive", "noise"), ("d", "inconclusive", "load")]:
        log.open(name, "")
        log.record(name, "figures", verdict, undecided_by=cause)
    log.open("e", "")
    log.settle("e", "skipped", "Skipped: needs 4 usable cores")
    assert log.count_line() == "claims: 1 holds, 1 inconclusive (noise), 2 inconclusive (load), 1 not run"
    assert log.strict_failure(0.75) is None  # 3 of 4 that ran, none leaning to fail
    assert "3 of 4 claims stayed undecided" in (log.strict_failure(0.5) or "")
