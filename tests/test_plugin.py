"""The plugin end to end through pytester: markers, skips and their reasons, header, options,
xdist, the claim summary and what lands in pytest-benchmark's JSON."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pytest_hpcdemo import backends
from pytest_hpcdemo.core import fixtures, hardware
from pytest_hpcdemo.core.figures import SCHEMA_VERSION


@pytest.fixture
def fake_hardware(monkeypatch: pytest.MonkeyPatch):
    """Replace detection with a machine of our choosing (for the in-process runs)."""

    def install(**changes):
        real = hardware.detect("forkserver")
        fake = dataclasses.replace(real, **changes)
        monkeypatch.setattr(hardware, "detect_cached", lambda start_method=None: fake)
        return fake

    return install


# pytest-mpi, when installed, skips MPI tests with its own reason before ours runs.
NO_PYTEST_MPI = ("-p", "no:mpi")

MARKED = """
import pytest

@pytest.mark.cores(999)
def test_cores(): pass

@pytest.mark.numba
def test_numba(): pass

@pytest.mark.ray
def test_ray(): pass

@pytest.mark.gpu
def test_gpu(): pass

@pytest.mark.mpi(min_size=4)
def test_mpi(): pass

@pytest.mark.timing
def test_timing(): pass
"""


def test_markers_are_registered_under_strict_markers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(MARKED)
    result = pytester.runpytest("--strict-markers", "--collect-only", "-q")
    assert result.ret == 0
    result = pytester.runpytest("--markers")
    for name in ("gpu:", "mpi(min_size=1):", "numba:", "ray:", "cores(n):", "timing:"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{name}*"])


def test_missing_hardware_skips_with_reasons(pytester: pytest.Pytester, fake_hardware) -> None:
    fake_hardware(numba=None, ray=None, gpu=hardware.GpuInfo(None, None),
                  mpi=hardware.MpiInfo("4.1.2", None, None, 1, 0, None))
    pytester.makepyfile(MARKED)
    result = pytester.runpytest("-rs", *NO_PYTEST_MPI)
    result.assert_outcomes(passed=1, skipped=5)
    out = str(result.stdout)
    for reason in (
        "needs 999 usable cores; this session has ",
        "Numba is not installed: pip install 'pytest-hpcdemo[numba]'",
        "Ray is not installed: pip install 'pytest-hpcdemo[ray]'",
        "no usable GPU: CuPy is not installed",
        "needs 4 MPI ranks, this run has 1: run: mpirun -n 4 pytest -m mpi",
    ):
        assert reason in out


def test_missing_mpi4py_says_what_to_install(pytester: pytest.Pytester, fake_hardware) -> None:
    fake_hardware(mpi=hardware.MpiInfo(None, None, None, 1, 0, None))
    pytester.makepyfile("import pytest\n@pytest.mark.mpi\ndef test_m(): pass\n")
    result = pytester.runpytest("-rs", *NO_PYTEST_MPI)
    result.assert_outcomes(skipped=1)
    assert "mpi4py is not installed: pip install 'pytest-hpcdemo[mpi]'" in str(result.stdout)


def test_bad_marker_argument_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.cores(0)\ndef test_c(): pass\n")
    result = pytester.runpytest()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*cores(n=...) takes a whole number >= 1, got 0*"])


# A session that opted in (the ini's hpcdemo = true, as in this repository) has the header at the start.
OPT_IN = ("-o", "hpcdemo=true")


def test_header_has_one_line_per_backend(pytester: pytest.Pytester, fake_hardware) -> None:
    fake_hardware(numba=None, gpu=hardware.GpuInfo(None, None), ray="2.60.0", ray_address=None,
                  free_threaded_build=False, gil_enabled=True)
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest(*OPT_IN)
    result.stdout.fnmatch_lines([
        "hpcdemo: * usable cores of * (affinity *); Python *, GIL enabled; process start method forkserver",
        "hpcdemo: numpy *",
        "hpcdemo: numba missing (pip install 'pytest-hpcdemo[numba]')",
        "hpcdemo: mpi*",
        "hpcdemo: ray 2.60.0, local cluster on 127.0.0.1*",
        "hpcdemo: gpu missing: CuPy is not installed*",
    ])


def test_header_says_when_the_gil_is_off(pytester: pytest.Pytester, fake_hardware) -> None:
    fake_hardware(free_threaded_build=True, gil_enabled=False)
    pytester.makepyfile("def test_a(): pass\n")
    pytester.runpytest(*OPT_IN).stdout.fnmatch_lines(["*GIL disabled (free-threaded)*"])


@pytest.mark.parametrize(
    "option, message",
    [
        ("--hpc-budget=0", "*--hpc-budget: must be more than 0 seconds, got '0'*"),
        ("--hpc-budget=soon", "*--hpc-budget: expected seconds, got 'soon'*"),
        ("--hpc-confidence=1.5", "*--hpc-confidence: must be at least 0.5 and below 1, got '1.5'*"),
        ("--hpc-start-method=teleport", "*--hpc-start-method: invalid choice: 'teleport'*"),
    ],
)
def test_bad_option_values_are_usage_errors(pytester: pytest.Pytester, option: str, message: str) -> None:
    pytester.makepyfile("def test_a(): pass\n")
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


CLAIMS = """
import time
from pytest_hpcdemo.core.measure import at_least

def test_twice_as_fast(speedup):
    '''Half the wait takes less time.'''
    # Waits need no core (cores_needed=0): the verdict does not depend on the machine's load.
    speedup(lambda: time.sleep(0.02), lambda: time.sleep(0.01), [at_least("speedup", 1.3)],
            cores_needed=0, name="half")

def test_semantics(claim):
    '''Two and two make four.'''
    claim("2 + 2 = 4")
    assert 2 + 2 == 4
"""


def test_figures_land_in_benchmark_json_and_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CLAIMS)
    result = pytester.runpytest("--benchmark-json=out.json", "-p", "no:xdist")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "*hpcdemo claims*",
        "HOLDS*test_twice_as_fast*",  # the figures wrap at 120 columns
        "*half: speedup * >= 1.3; * rounds*",
        "HOLDS*test_semantics*2 + 2 = 4",
        "claims: 2 holds",
    ])
    data = json.loads((pytester.path / "out.json").read_text())
    assert data["machine_info"]["hpcdemo_schema"] == SCHEMA_VERSION  # core/figures.py
    info = data["machine_info"]["hpcdemo"]
    assert info["usable_cores"] >= 1 and "gil_enabled" in info and "blas" in info
    assert info["start_method"] == "forkserver"
    (bench,) = data["benchmarks"]
    figures = bench["extra_info"]["claims"]["half"]
    assert figures["verdict"] == "holds" and figures["speedup_median"] > 1.3
    assert bench["stats"]["rounds"] == figures["rounds"] == len(figures["candidate_s"])


def test_failing_claim_fails_with_its_figures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import time
from pytest_hpcdemo.core.measure import at_least

def test_no_faster(speedup):
    speedup(lambda: time.sleep(0.01), lambda: time.sleep(0.01), [at_least("speedup", 3.0)],
            cores_needed=0, name="same")
""")
    result = pytester.runpytest("-p", "no:xdist")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*claim fails: same: speedup * [[]*, *] >= 3*", "FAILS*test_no_faster*"])


def test_undecided_claim_is_skipped_with_its_reason(pytester: pytest.Pytester) -> None:
    """A threshold inside the interval cannot be decided: a skip, and the summary says why. The
    baseline's waits alternate between 10 and 30 ms against the candidate's 20, so the per-round
    speedups alternate near 0.5 and 1.5 whatever the machine does: never decided at 1.0."""
    pytester.makepyfile("""
import itertools
import time
from pytest_hpcdemo.core.measure import at_least

def test_on_the_line(speedup):
    waits = itertools.cycle([0.01, 0.03])
    speedup(lambda: time.sleep(next(waits)), lambda: time.sleep(0.02), [at_least("speedup", 1.0)],
            cores_needed=0, name="straddling")
""")
    result = pytester.runpytest("-p", "no:xdist", "-rs", "-vv", "--hpc-budget=0.3")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([
        "INCONCLUSIVE*test_on_the_line*",  # the figures wrap at 120 columns
        "*straddling: speedup *",
        "*(too noisy to decide*",
        "SKIPPED*inconclusive: straddling: too noisy to decide within * s at 90% confidence*",
    ])


def test_timing_tests_are_skipped_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(CLAIMS)
    result = pytester.runpytest_subprocess("-n", "2", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*timing-sensitive: pytest-xdist workers share the cores*"])


def test_backend_names_agree() -> None:
    assert fixtures.BACKEND_NAMES == backends.BACKEND_NAMES


def test_plain_collect_imports_no_backend(pytester: pytest.Pytester) -> None:
    """The plugin imports no heavy backend (nor its own measurement modules) when unused."""
    pytester.makepyfile("def test_a(): pass\n")
    pytester.makeconftest("""
import sys
def pytest_collection_finish(session):
    heavy = ["numpy", "mpi4py", "ray", "numba", "cupy", "multiprocessing",
             "pytest_hpcdemo.core.measure", "pytest_hpcdemo.core.hardware"]
    print("LOADED:", sorted(m for m in heavy if m in sys.modules))
""")
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines(["LOADED: []"])
