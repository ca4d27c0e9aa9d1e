"""The Numba plugin module: the fork trap (start method and threading layer), the threading layer
in the header and in pytest-benchmark's machine_info."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from types import SimpleNamespace

import pytest

from pytest_hpcdemo.core import hardware
from pytest_hpcdemo.numba import plugin as numba_plugin
from pytest_hpcdemo.numba import support as numba_support

LAYER = numba_plugin.LAYER_VAR
needs_numba = pytest.mark.skipif(hardware.package_version("numba") is None,
                                 reason="Numba is not installed: pip install 'pytest-hpcdemo[numba]'")

@pytest.fixture
def fresh_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    """A detection cache of this test's own: the layer is read from the environment it sets."""
    monkeypatch.setattr(hardware, "detect_cached", functools.cache(hardware.detect))


SEES_LAYER = """
import os

def test_layer():
    print("LAYER:", os.environ.get("NUMBA_THREADING_LAYER"))
"""


@pytest.mark.parametrize(
    "method, layer, trapped",
    [("fork", "omp", True), ("fork", "default", True), ("fork", "OMP", True), ("fork", "threadsafe", True),
     ("fork", "forksafe", False), ("fork", "workqueue", False), ("fork", "tbb", False),
     ("forkserver", "omp", False), ("spawn", "default", False)],
)
def test_fork_trap_reason(method: str, layer: str, trapped: bool) -> None:
    reason = numba_plugin.fork_trap_reason(method, layer)
    if sys.platform.startswith("linux") and trapped:
        assert reason is not None and f"NUMBA_THREADING_LAYER={layer}" in reason
        assert "--hpc-start-method=forkserver" in reason
    else:
        assert reason is None


@needs_numba
@pytest.mark.usefixtures("fresh_detection")
def test_fork_start_method_selects_a_fork_safe_layer(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LAYER, raising=False)
    pytester.makepyfile(SEES_LAYER)
    result = pytester.runpytest("--hpc-start-method=fork", "-s", "-p", "no:xdist")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["hpcdemo: numba *, threading layer forksafe configured*",
                                 "*LAYER: forksafe*"])
    assert LAYER not in os.environ, "the plugin must restore the environment at the end of the session"


@pytest.mark.usefixtures("fresh_detection")
def test_other_start_methods_leave_the_layer_alone(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LAYER, raising=False)
    pytester.makepyfile(SEES_LAYER)
    result = pytester.runpytest("--hpc-start-method=forkserver", "-s", "-p", "no:xdist")
    result.stdout.fnmatch_lines(["*LAYER: None*"])


@needs_numba
@pytest.mark.usefixtures("fresh_detection")
def test_fork_with_an_unsafe_layer_skips_numba_tests(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("GNU OpenMP, and so the fork trap, is Linux's")
    monkeypatch.setenv(LAYER, "omp")
    pytester.makepyfile("""
import pytest

@pytest.mark.numba
def test_numba(): pass

def test_plain(): pass
""")
    result = pytester.runpytest("--hpc-start-method=fork", "-rs", "-p", "no:xdist")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*--hpc-start-method=fork with NUMBA_THREADING_LAYER=omp: a process fork*"])
    assert os.environ[LAYER] == "omp", "a layer the user chose is left as it is"


def test_header_reports_the_configured_layer(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fake = dataclasses.replace(hardware.detect("forkserver"), numba="0.68.1", numba_threading_layer="tbb")
    monkeypatch.setattr(hardware, "detect_cached", lambda start_method=None: fake)
    pytester.makepyfile("def test_a(): pass\n")
    pytester.runpytest("-p", "no:xdist", "-o", "hpcdemo=true").stdout.fnmatch_lines(  # opted in: the header
        ["hpcdemo: numba 0.68.1, threading layer tbb configured (the layer used goes to machine_info*"])


def _raises_value_error() -> str:
    raise ValueError("Threading layer is not initialized.")


@pytest.mark.parametrize(
    "module, expected",
    [(None, None), (SimpleNamespace(threading_layer=_raises_value_error), None),
     (SimpleNamespace(threading_layer=lambda: "omp"), "omp")],
)
def test_threading_layer_used(monkeypatch: pytest.MonkeyPatch, module: object, expected: str | None) -> None:
    """Known only after a parallel call, and never by importing Numba."""
    monkeypatch.delitem(sys.modules, "numba", raising=False)
    if module is not None:
        monkeypatch.setitem(sys.modules, "numba", module)
    assert hardware.numba_threading_layer_used() == expected
    assert sys.modules.get("numba") is module


def test_c_compiler_honours_cc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "ccache gcc -m64")
    assert numba_support.c_compiler() == ["ccache", "gcc", "-m64"]


@pytest.mark.slow
@pytest.mark.numba
def test_fork_session_keeps_pools_working_and_records_the_layer(pytester: pytest.Pytester,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --hpc-start-method=fork a pool forked after parallel code still runs parallel code,
    and machine_info names the fork-safe layer that was used."""
    monkeypatch.delenv(LAYER, raising=False)
    pytester.makepyfile("""
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from pytest_hpcdemo.core import workloads

def test_pool_after_parallel(benchmark):
    expected = benchmark.pedantic(workloads.numba_pi_parallel, args=(100_000,), rounds=1)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert math.isclose(pool.submit(workloads.numba_pi_parallel, 100_000).result(timeout=120), expected)
""")
    result = pytester.runpytest_subprocess("--hpc-start-method=fork", "--benchmark-json=out.json",
                                           "-p", "no:xdist", timeout=300)
    result.assert_outcomes(passed=1)
    info = json.loads((pytester.path / "out.json").read_text())["machine_info"]["hpcdemo"]
    assert info["start_method"] == "fork"
    assert info["numba_threading_layer"] == "forksafe"
    assert info["numba_threading_layer_used"] in ("tbb", "workqueue")
