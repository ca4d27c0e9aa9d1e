"""The plugin as a guest in other projects' sessions: a session that does not use it runs as without
it (outcomes, output, saved JSON, imports), a suite's own markers keep their meaning, pytest-mpi's
semantics are its own, and a pytest started inside an MPI rank is not taken for a rank."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_hpcdemo.core import hardware
from pytest_hpcdemo.mpi import plugin as mpi_plugin
from pytest_hpcdemo.mpi.launch import launch_of, pmi_fd_is_ours

WITHOUT = ("-p", "no:hpcdemo")
OPT_IN = ("-o", "hpcdemo=true")
MPIRUN = Path(sys.executable).parent / "mpirun"
HAS_MPI = hardware.package_version("mpi4py") is not None and MPIRUN.exists()
needs_mpirun = pytest.mark.skipif(not HAS_MPI, reason="needs mpi4py and the mpich wheel's mpirun beside this "
                                                      "Python: pip install 'pytest-hpcdemo[mpi]'")
needs_pytest_mpi = pytest.mark.skipif(hardware.package_version("pytest-mpi") is None,
                                      reason="needs pytest-mpi: pip install pytest-mpi")

# A suite with markers of its own under the names we use: its meaning, not ours, whatever the machine.
OWN_MARKERS_INI = """
[pytest]
markers =
    gpu: runs on whatever GPU library this project has
    timing: this project's timing tests
    cores(n): this project's core counts
    ray: this project's Ray-like thing
"""
OWN_MARKERS_SUITE = """
import pytest

@pytest.mark.gpu
def test_gpu(): pass

@pytest.mark.cores(999)
def test_cores(): pass

@pytest.mark.timing
def test_timing(): pass

@pytest.mark.ray
def test_ray(): pass
"""


def outcomes(result: pytest.RunResult) -> dict[str, int]:
    return {k: v for k, v in result.parseoutcomes().items() if k not in ("warning", "warnings")}


def test_own_markers_keep_their_meaning(pytester: pytest.Pytester) -> None:
    pytester.makeini(OWN_MARKERS_INI)
    pytester.makepyfile(OWN_MARKERS_SUITE)
    with_us = pytester.runpytest("--strict-markers")
    without = pytester.runpytest("--strict-markers", *WITHOUT)
    assert outcomes(with_us) == outcomes(without) == {"passed": 4}
    with_us.stdout.no_fnmatch_line("hpcdemo:*")  # nothing of ours in the output either


def test_own_timing_marker_runs_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makeini(OWN_MARKERS_INI)
    pytester.makepyfile(OWN_MARKERS_SUITE)
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=4)


def test_namespaced_markers_stay_ours_beside_a_suite_s_own(pytester: pytest.Pytester) -> None:
    pytester.makeini(OWN_MARKERS_INI)
    pytester.makepyfile("""
import pytest

@pytest.mark.hpc_cores(999)
def test_ours(): pass

@pytest.mark.cores(999)
def test_theirs(): pass
""")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs 999 usable cores*"])


def test_opting_in_gives_the_common_names_our_meaning(pytester: pytest.Pytester) -> None:
    pytester.makeini(OWN_MARKERS_INI + "hpcdemo = true\n")
    pytester.makepyfile("import pytest\n@pytest.mark.cores(999)\ndef test_c(): pass\n")
    pytester.runpytest().assert_outcomes(skipped=1)


def test_unused_plugin_steps_aside(pytester: pytest.Pytester) -> None:
    """No header line, and none of our hooks left once collection showed that nothing is ours; a
    test that requests a fixture of ours keeps them (and gets the header after collection)."""
    pytester.makeconftest("""
def pytest_sessionfinish(session):
    print("OURS LEFT:", session.config.pluginmanager.get_plugin("hpcdemo") is not None)
""")
    pytester.makepyfile(test_plain="def test_a(): pass\n",
                        test_ours="def test_b(hardware): assert hardware.usable_cores >= 1\n")
    plain = pytester.runpytest("-s", "test_plain.py")
    plain.stdout.fnmatch_lines(["*OURS LEFT: False*"])
    plain.stdout.no_fnmatch_line("hpcdemo:*")
    ours = pytester.runpytest("-s", "test_ours.py")
    ours.assert_outcomes(passed=1)
    ours.stdout.fnmatch_lines(["collected 1 item", "hpcdemo: * usable cores of *", "*OURS LEFT: True*"])


def test_a_suite_s_own_fixture_of_the_same_name_is_not_ours(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
import pytest

@pytest.fixture
def hardware():
    return "the project's own"

def pytest_sessionfinish(session):
    print("OURS LEFT:", session.config.pluginmanager.get_plugin("hpcdemo") is not None)
""")
    pytester.makepyfile("def test_a(hardware): assert hardware == \"the project's own\"\n")
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*OURS LEFT: False*"])


PLAIN_BENCHMARK = """
def test_sum(benchmark):
    benchmark(sum, range(100))
"""
IMPORTS_CONFTEST = """
import sys

def pytest_unconfigure(config):  # after pytest-benchmark saved the run
    heavy = ["numpy", "threadpoolctl", "cupy", "mpi4py", "scipy", "pytest_hpcdemo.core.hardware"]
    print("LOADED:", sorted(m for m in heavy if m in sys.modules))
"""


def test_plain_benchmark_saves_the_same_json(pytester: pytest.Pytester) -> None:
    """A pytest-benchmark suite's saved run has the keys it has without the plugin: no foreign_load
    in extra_info, no raw timings (before: 6 KB of JSON became 81 KB), no machine_info of ours; and
    NumPy is not imported to fill them."""
    pytester.makeconftest(IMPORTS_CONFTEST)
    pytester.makepyfile(PLAIN_BENCHMARK)
    saved = {}
    for label, extra in (("with", ()), ("without", WITHOUT)):
        result = pytester.runpytest_subprocess("-s", "-p", "no:xdist", f"--benchmark-save={label}",
                                               "--benchmark-max-time=0.01", *extra)
        result.assert_outcomes(passed=1)
        assert "LOADED: []" in str(result.stdout)
        (path,) = (pytester.path / ".benchmarks").glob(f"*/*_{label}.json")
        saved[label] = json.loads(path.read_text())
    (with_us,), (without,) = saved["with"]["benchmarks"], saved["without"]["benchmarks"]
    assert with_us.keys() == without.keys() and with_us["stats"].keys() == without["stats"].keys()
    assert with_us["extra_info"] == without["extra_info"] == {} and "data" not in with_us["stats"]
    assert saved["with"]["machine_info"].keys() == saved["without"]["machine_info"].keys()


# pytest-mpi's markers as its own suite uses them (test_markers.py there).
PYTEST_MPI_SUITE = """
import pytest

@pytest.mark.mpi
def test_mpi():
    from mpi4py import MPI
    assert MPI.COMM_WORLD.size >= 1

@pytest.mark.mpi(min_size=2)
def test_mpi_two():
    pass

@pytest.mark.mpi_skip
def test_mpi_skip():
    pass

@pytest.mark.mpi_xfail
def test_mpi_xfail():
    assert False

def test_plain():
    pass
"""


@needs_pytest_mpi
@pytest.mark.parametrize("args", [(), ("--with-mpi",), ("--only-mpi",)],
                         ids=["plain", "with-mpi", "only-mpi"])
def test_pytest_mpi_semantics_are_its_own(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    pytester.makepyfile(PYTEST_MPI_SUITE)
    with_us = pytester.runpytest_subprocess("-rsx", *args)
    without = pytester.runpytest_subprocess("-rsx", *args, *WITHOUT)
    assert outcomes(with_us) == outcomes(without)
    if not args:
        with_us.stdout.fnmatch_lines(["*need --with-mpi option to run*"])


@needs_pytest_mpi
def test_opted_in_runs_mpi_tests_without_with_mpi(pytester: pytest.Pytester) -> None:
    """This repository's ``pytest -m mpi`` as typed: MPI tests run, or skip with our reasons."""
    pytester.makepyfile(PYTEST_MPI_SUITE)
    result = pytester.runpytest_subprocess("-rs", "-m", "mpi", *OPT_IN)
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs 2 MPI ranks, this run has 1*"])


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL",
                                                                      "HYDRA_"))}


@needs_mpirun
def test_pytest_started_inside_a_rank_is_not_a_rank(pytester: pytest.Pytester) -> None:
    """Each rank runs a plain ``python -m pytest`` in a subprocess: it inherits PMI_SIZE, PMI_RANK and
    PMI_FD, but is no rank, so it runs as a plain session (before: exit 15 with no output)."""
    pytester.makepyfile(test_plain="def test_a(): pass\n")
    rank = ("import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'pytest', '-q', "
            "'-p', 'no:cacheprovider', 'test_plain.py']))")
    proc = subprocess.run([str(MPIRUN), "-n", "2", sys.executable, "-c", rank], cwd=pytester.path,
                          env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("1 passed") == 2


@needs_mpirun
def test_foreign_suite_under_mpirun_gets_no_mpi_session(pytester: pytest.Pytester) -> None:
    """A suite that does not opt in runs under ``mpirun`` as without us: every rank reports."""
    pytester.makepyfile(test_plain="def test_a(): pass\n")
    proc = subprocess.run([str(MPIRUN), "-n", "2", sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                          cwd=pytester.path, env=_clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("1 passed") == 2 and "hpcdemo:" not in proc.stdout


def test_inherited_pmi_fd_is_not_ours(tmp_path: Path) -> None:
    mine, other = socket.socketpair()
    with mine, other, open(tmp_path / "file", "w") as regular:
        assert pmi_fd_is_ours(str(mine.fileno()))  # a socket this process holds and its parent does not
        assert not pmi_fd_is_ours(str(regular.fileno()))  # not a socket
        closed = mine.fileno()
    assert not pmi_fd_is_ours(str(closed)) and not pmi_fd_is_ours("not a number")
    assert launch_of({"PMI_SIZE": "2", "PMI_RANK": "1", "PMI_FD": str(closed)}) is None
    assert launch_of({"PMI_SIZE": "2", "PMI_RANK": "1"}) is not None  # PMI_PORT-style launches: no fd


DEADLINES = """
import pytest

@pytest.mark.mpi
def test_long_user_test():
    pass

@pytest.mark.mpi(deadline=5)
def test_with_its_own():
    pass

def test_measured(mpi_benchmark):
    pass
"""


@pytest.mark.parametrize("args, expected", [
    ((), [None, 5.0, mpi_plugin.DEFAULT_DEADLINE_S]),
    (("--mpi-deadline=7",), [7.0, 5.0, 7.0]),
], ids=["default", "option"])
def test_deadline_only_for_our_measurements_by_default(pytester: pytest.Pytester, args: tuple[str, ...],
                                                       expected: list[float | None]) -> None:
    """A user's long MPI test is never aborted by a default deadline (before: 60 s for every test);
    ``mpi_benchmark`` tests, whose rounds the budget bounds, keep one; marker and option still work."""
    items = pytester.genitems([pytester.getmodulecol(DEADLINES, configargs=args)])
    assert [mpi_plugin._deadline(item) for item in items] == expected


@needs_mpirun
def test_long_user_mpi_test_outlives_the_default_deadline(pytester: pytest.Pytester) -> None:
    """Under ``mpirun -n 2``, opted in: a user's MPI test that runs past the default deadline
    passes (before: aborted at 60 s, leaving a temporary base and MPICH shared memory). To keep
    this short the default is lowered to 1 s once the MPI session is up (its own collectives keep
    the 60 s); the test runs 3 s."""
    pytester.makeconftest("""
from pytest_hpcdemo.mpi import plugin as mpi_plugin

def pytest_sessionstart(session):
    mpi_plugin.DEFAULT_DEADLINE_S = 1.0
""")
    pytester.makepyfile(test_long="""
import time
import pytest

@pytest.mark.mpi(min_size=2)
def test_long():
    time.sleep(3)
""")
    proc = subprocess.run([str(MPIRUN), "-n", "2", sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "-p", "no:xdist", *OPT_IN], cwd=pytester.path, env=_clean_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout and "ran past its deadline" not in proc.stdout


MODULES_CONFTEST = """
import json
import sys

def pytest_unconfigure(config):
    plugins = [name for name, plugin in config.pluginmanager.list_name_plugin()
               if plugin is not None and "hpcdemo" in str(name)]
    with open(config.getoption("--modules-to"), "w") as f:
        json.dump({"modules": sorted(sys.modules), "plugins": plugins}, f)

def pytest_addoption(parser):
    parser.addoption("--modules-to")
"""


def _modules_of(pytester: pytest.Pytester, label: str, *args: str) -> dict[str, list[str]]:
    out = pytester.path / f"{label}.json"
    pytester.runpytest_subprocess(f"--modules-to={out}", "-p", "no:xdist", *args).assert_outcomes(passed=1)
    return json.loads(out.read_text())


def test_blocked_plugin_is_as_not_installed(pytester: pytest.Pytester) -> None:
    """``-p no:hpcdemo`` (the overhead benchmark's "without") is as if the plugin were not installed:
    pytest imports no module of ours and registers no plugin of ours. With the plugin, an unused
    session imports nothing beyond our own modules and the standard library (no NumPy, no MPI)."""
    pytester.makeconftest(MODULES_CONFTEST)
    pytester.makepyfile("def test_a(): pass\n")
    without = _modules_of(pytester, "without", *WITHOUT)
    assert [m for m in without["modules"] if m.startswith("pytest_hpcdemo")] == []
    assert without["plugins"] == []
    with_us = _modules_of(pytester, "with")
    extra = set(with_us["modules"]) - set(without["modules"])
    assert extra and all(m.startswith("pytest_hpcdemo") or m.split(".")[0] in sys.stdlib_module_names
                         for m in extra), sorted(extra)
    assert with_us["plugins"] == ["hpcdemo.fixtures"]  # its fixtures stay defined; no hook of ours is left
