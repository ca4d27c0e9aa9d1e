"""The MPI session end to end: ``mpirun -n 2``/``-n 4`` on small pytester projects. Every launch has
a timeout, so that a plugin that hangs fails these tests instead of hanging them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_hpcdemo.core import hardware
from pytest_hpcdemo.mpi.session import LONE_RANK_GRACE_S

MPIRUN = Path(sys.executable).parent / "mpirun"
LAUNCH_TIMEOUT_S = 120.0

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(hardware.package_version("mpi4py") is None or not MPIRUN.exists(),
                       reason="needs mpi4py and the mpich wheel's mpirun beside this Python: "
                              "pip install 'pytest-hpcdemo[mpi]'"),
]

# Each rank writes its final exit status, so that "every rank exits alike" is checked, not assumed.
STATUS_CONFTEST = """
import os
import pytest

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    rank = os.environ.get("PMI_RANK", "0")
    with open(f"status-{rank}", "w") as f:
        f.write(str(int(session.exitstatus)))
"""


class Launch:
    def __init__(self, proc: subprocess.CompletedProcess[str], seconds: float, path: Path) -> None:
        self.ret, self.out, self.err, self.seconds, self.path = proc.returncode, proc.stdout, proc.stderr, \
            seconds, path

    def statuses(self) -> list[int]:
        return [int(p.read_text()) for p in sorted(self.path.glob("status-*"))]


def mpirun(pytester: pytest.Pytester, n: int, *args: str) -> Launch:
    """``mpirun -n N python -m pytest ARGS`` in the pytester directory, outside any launcher's
    environment (this suite itself may run under one)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_"))}
    start = time.monotonic()
    command = [str(MPIRUN), "-n", str(n), sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
               "-o", "hpcdemo=true",  # opted in, as this repository's ini is: our MPI session
               f"--basetemp={pytester.path / 'basetemp'}", *args]  # an aborted job's files stay in here
    proc = subprocess.run(command, cwd=pytester.path, env=env, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT_S)
    return Launch(proc, time.monotonic() - start, pytester.path)


def test_passing_suite_exits_0_with_one_report(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STATUS_CONFTEST)
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi(min_size=2)
def test_sum(comm):
    assert comm.allreduce(comm.rank) == sum(range(comm.size))

@pytest.mark.mpi(min_size=2)
def test_shared_dir(comm, mpi_tmp_path, tmp_path):
    (mpi_tmp_path / f"from-{comm.rank}").touch()
    comm.Barrier()
    assert len(list(mpi_tmp_path.iterdir())) == comm.size
    assert len(set(comm.allgather(str(tmp_path)))) == comm.size  # each rank its own tmp_path

@pytest.mark.mpi
def test_timed(mpi_benchmark, comm):
    mpi_benchmark(comm.Barrier, name="barrier")
""")
    run = mpirun(pytester, 4, "--benchmark-json=out.json")
    assert run.ret == 0, run.out + run.err
    assert run.out.count("test session starts") == 1
    assert run.out.count("3 passed") == 1
    assert "under MPICH (Hydra): rank 0 of 4" in run.out
    assert re.search(r"^hpcdemo: mpi ranks \(rank host:pid\): 0 \S+:\d+, 1 \S+:\d+, 2 \S+:\d+, 3 \S+:\d+$",
                     run.out, re.M), run.out
    if hardware.detect().usable_cores < 4:
        assert "oversubscribed (4 ranks on" in run.out
    assert run.statuses() == [0, 0, 0, 0]
    (bench,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert bench["extra_info"]["mpi"]["size"] == 4 and bench["stats"]["rounds"] >= 5


def test_failure_on_one_rank_fails_every_rank(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(STATUS_CONFTEST)
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi(min_size=2)
def test_picky(comm):
    assert comm.rank != 1, "rank 1 says no"

@pytest.mark.mpi(min_size=2)
def test_after(comm):
    comm.Barrier()
""")
    run = mpirun(pytester, 2)
    assert run.ret == 1, run.out + run.err
    assert "failed on rank 1 of 2" in run.out and "rank 1 says no" in run.out
    assert run.out.count("1 failed, 1 passed") == 1
    assert run.statuses() == [1, 1]


def test_rank_raising_before_a_collective_ends_the_job(pytester: pytest.Pytester) -> None:
    """Rank 1 fails before a barrier that rank 0 waits in: the job ends, with rank 1's failure."""
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi(min_size=2)
def test_raises_early(comm):
    if comm.rank == 1:
        raise RuntimeError("rank 1 gave up")
    comm.Barrier()
""")
    run = mpirun(pytester, 2)
    assert run.ret != 0
    assert "the other ranks did not reach its end" in run.err and "rank 1 gave up" in run.err
    assert "ended first" not in run.out + run.err  # the monitor is quiet: the watchdog said why
    assert run.seconds < LAUNCH_TIMEOUT_S / 2, f"took {run.seconds:.1f} s"


def test_skip_on_one_rank_while_the_others_wait_is_named(pytester: pytest.Pytester) -> None:
    """Rank 1 skips; rank 0 waits in a barrier rank 1 never enters: the job ends after the lone-rank
    grace (not the 60 s deadline), saying that rank 1 skipped and why."""
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi(min_size=2)
def test_skips_on_one(comm):
    if comm.rank == 1:
        pytest.skip("rank 1 lacks the data")
    comm.Barrier()
""")
    run = mpirun(pytester, 2)
    assert run.ret != 0
    assert "test_skips_on_one (call) skipped on this rank and the other ranks did not reach its end " \
           "within 10 s" in run.err and "rank 1 lacks the data" in run.err, run.err
    assert "past its deadline" not in run.err
    assert run.seconds < LONE_RANK_GRACE_S + 20, f"took {run.seconds:.1f} s"


def test_deadline_dumps_stacks_and_aborts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi(deadline=2)
def test_waits_forever(comm):
    comm.recv(source=comm.rank)  # nobody sends
""")
    run = mpirun(pytester, 2)
    assert run.ret != 0
    assert "test_waits_forever ran past its deadline of 2 s" in run.err
    assert "test_waits_forever" in run.err.split("every thread's stack follows")[1]  # the dump
    assert "ended first" not in run.out + run.err
    assert run.seconds < LAUNCH_TIMEOUT_S / 2, f"took {run.seconds:.1f} s"


def test_collection_mismatch_is_an_error_on_every_rank(pytester: pytest.Pytester) -> None:
    """Rank 0 alone says which test ids each rank lacks; every rank exits with status 4."""
    pytester.makeconftest(STATUS_CONFTEST)
    pytester.makepyfile("""
import os

def test_everywhere():
    pass

if os.environ.get("PMI_RANK") == "1":
    def test_only_on_rank_1():
        pass
""")
    run = mpirun(pytester, 2)
    assert run.ret == pytest.ExitCode.USAGE_ERROR
    assert run.err.count("MPI ranks collected different tests") == 1, run.err
    lacking = "test_collection_mismatch_is_an_error_on_every_rank.py::test_only_on_rank_1"
    assert f"rank 0 (1 tests, 0 collection errors) lacks {lacking}; " \
           "rank 1 (2 tests, 0 collection errors) lacks none" in run.err
    assert run.statuses() == [4, 4]


def test_min_size_skips_with_the_command_to_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi(min_size=4)
def test_big(comm):
    pass
""")
    run = mpirun(pytester, 2, "-rs")
    assert run.ret == 0
    assert "needs 4 MPI ranks, this run has 2: run: mpirun -n 4 pytest -m mpi" in run.out


def test_plain_pytest_gives_our_reasons_despite_pytest_mpi(pytester: pytest.Pytester) -> None:
    """pytest-mpi would skip every MPI test "need --with-mpi option to run"; ours run or say why."""
    pytester.makepyfile("""
import pytest

@pytest.mark.mpi
def test_one_rank(comm):
    assert comm.size == 1

@pytest.mark.mpi(min_size=2)
def test_two_ranks(comm):
    pass
""")
    result = pytester.runpytest_subprocess("-rs", "-o", "hpcdemo=true")  # opted in, as this repository is
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*needs 2 MPI ranks, this run has 1: run: mpirun -n 2 pytest -m mpi*"])
    result.stdout.no_fnmatch_line("*need --with-mpi*")


def test_bad_deadline_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.mpi(deadline=0)\ndef test_d(): pass\n")
    result = pytester.runpytest("-o", "hpcdemo=true")  # opted in: mpi is ours beside pytest-mpi
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*mpi(deadline=...) takes seconds > 0, got 0*"])
