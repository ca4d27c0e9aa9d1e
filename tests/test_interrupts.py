"""Whatever stops a run, it ends cleanly: each fault of issue #12 injected into a real run in a
subprocess (a signal sent when the test under way writes a marker file, a rank killed), with the
outcome, the message and what is left 10 s later checked: the child's processes (found by a tag in
their environment, wherever they were reparented), the shared memory they had mapped (semaphores,
MPICH's segments) and the folders (``pymp-*``, ``pytest-hpcdemo-mpi-*``) in its private temp dir."""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_hpcdemo.core import hardware
from pytest_hpcdemo.core.interrupts import Interrupts, SignalListener
from pytest_hpcdemo.mpi import session as mpi
from pytest_hpcdemo.mpi.monitor import exit_events, first_to_end
from pytest_hpcdemo.mpi.session import mapped_shared_memory

MPIRUN = Path(sys.executable).parent / "mpirun"
READY_TIMEOUT_S = 120.0  # Ray's start takes up to 14 s on a loaded machine, pytest's a few
END_TIMEOUT_S = 60.0
LEFT_AFTER_S = 10.0
OUR_FOLDERS = ("pymp-", "pytest-hpcdemo-mpi-")  # multiprocessing's, the MPI session's

needs_mpi = pytest.mark.skipif(hardware.package_version("mpi4py") is None or not MPIRUN.exists(),
                               reason="needs mpi4py and the mpich wheel's mpirun beside this Python: "
                                      "pip install 'pytest-hpcdemo[mpi]'")
needs_ray = pytest.mark.skipif(hardware.package_version("ray") is None,
                               reason="Ray is not installed: pip install 'pytest-hpcdemo[ray]'")


# ---------------------------------------------------------------------------------------------
# The pieces, in this process


def test_sigterm_raises_keyboard_interrupt_kills_pool_workers_and_is_restored() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    interrupts = Interrupts()
    assert interrupts.install()
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver"))
    try:
        futures = [pool.submit(time.sleep, 30) for _ in range(2)]
        while len(multiprocessing.active_children()) < 2:
            time.sleep(0.01)
        workers = {p.pid for p in multiprocessing.active_children()}
        with pytest.raises(KeyboardInterrupt, match="SIGTERM received"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs in this thread, at the next bytecode
        assert interrupts.received == [signal.SIGTERM] and set(interrupts.killed_workers) == workers
        with pytest.raises(BrokenProcessPool):
            futures[0].result(timeout=30)  # killed: the pool's manager thread sees it at once
        summary = interrupts.summary() or ""
        assert "interrupted by SIGTERM; multiprocessing children (pool workers) killed: " in summary
    finally:
        interrupts.restore()
        pool.shutdown(wait=True, cancel_futures=True)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_watchdog_cuts_a_wait_short_after_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rank blocked in MPI never sees KeyboardInterrupt: its watchdog, told of the signal, ends
    the job after the grace (not the armed deadline), with status 2 and no stack dump."""
    monkeypatch.setattr(mpi, "INTERRUPT_GRACE_S", 0.3)
    monkeypatch.setattr(mpi, "ABORT_DELAY_S", 0.05)
    aborted: list[tuple[float, int]] = []
    done = threading.Event()
    tidied = threading.Event()
    dog = mpi.Watchdog("rank 1 of 2", lambda status: (aborted.append((time.monotonic(), status)), done.set()),
                       tidied.set)
    with dog.armed(60, "the test ran past its deadline"):
        time.sleep(0.5)  # armed before the signal: the grace counts from the signal
        start = time.monotonic()
        dog.interrupted("SIGINT")
        assert done.wait(10)
    ((when, status),) = aborted
    assert 0.3 <= when - start < 5 and status == mpi.INTERRUPTED_STATUS and tidied.is_set()


def test_signal_listener_hears_a_signal_while_the_main_thread_is_busy() -> None:
    heard: list[int] = []
    got = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        listener = SignalListener(lambda signum: (heard.append(signum), got.set()))
        os.kill(os.getpid(), signal.SIGTERM)
        assert got.wait(10)  # the listener's thread, not this one's handler, reported it
        listener.close()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert heard == [signal.SIGTERM]


# ---------------------------------------------------------------------------------------------
# Faults injected into real runs


def _tagged(tag: str) -> list[int]:
    """The live processes whose environment carries the tag."""
    needle = f"HPCDEMO_FAULT_TAG={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "environ").read_bytes() and \
                    (entry / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@dataclass
class Stopped:
    ret: int
    out: str
    seconds: float  # from the signal (or the marker file) to the child's exit
    processes_left: list[str]  # cmdlines, LEFT_AFTER_S after the exit
    shm_left: list[str]
    tmp_left: list[str]

    def assert_nothing_left(self) -> None:
        assert not self.processes_left, f"processes left: {self.processes_left}\n{self.out}"
        assert not self.shm_left, f"shared memory left: {self.shm_left}"
        assert not self.tmp_left, f"temporary folders left: {self.tmp_left}"


def run_faulted(pytester: pytest.Pytester, command: list[str], signum: int | None,
                private_tmp: bool = True) -> Stopped:
    """Run ``command`` in the pytester directory; when a test writes ``ready``, send ``signum`` to
    the child (None: the fault is the test's own), then wait for its end and look for leftovers.
    Processes still there at the end are killed, so that a failing test leaves nothing either."""
    tag = uuid.uuid4().hex
    tmp = Path(tempfile.mkdtemp(prefix="hpcfault-"))  # short: AF_UNIX paths (the forkserver's) fit 107 bytes
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_"))}
    env.update(HPCDEMO_FAULT_TAG=tag, RAY_USAGE_STATS_ENABLED="0")
    if private_tmp:  # not for Ray, whose session folders stay by design
        env["TMPDIR"] = str(tmp)
    ready = pytester.path / "ready"
    child = subprocess.Popen(command, cwd=pytester.path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while signum is not None and not ready.exists() and child.poll() is None:
            assert time.monotonic() < deadline, "the test under way never wrote its marker file"
            time.sleep(0.05)
        shm = set().union(*(mapped_shared_memory(pid) for pid in _tagged(tag)))
        start = time.monotonic()
        if signum is not None and child.poll() is None:
            child.send_signal(signum)
        out, _ = child.communicate(timeout=END_TIMEOUT_S)
        seconds = time.monotonic() - start
        deadline = time.monotonic() + LEFT_AFTER_S
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
                for pid in _tagged(tag)]
        shm_left = sorted(name for name in shm if " (deleted)" not in name and Path(name).exists())
        tmp_left = sorted(p.name for p in tmp.iterdir() if p.name.startswith(OUR_FOLDERS))
        return Stopped(child.returncode, out, seconds, left, shm_left, tmp_left)
    finally:
        for pid in _tagged(tag):
            os.kill(pid, signal.SIGKILL)
        if child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def pytest_command(*args: str) -> list[str]:
    # Opted in (as this repository's ini is): a session that uses nothing of ours gets no handler.
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "hpcdemo=true", *args]


def mpirun_command(n: int, *args: str) -> list[str]:
    return [str(MPIRUN), "-n", str(n), *pytest_command(*args)]


POOL_TEST = """
import multiprocessing, os, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

def task(x):
    time.sleep(60)

def test_before():
    pass

def test_pool_claim():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        futures = [pool.submit(task, i) for i in range(4)]
        while len(multiprocessing.active_children()) < 2:
            time.sleep(0.01)
        time.sleep(0.2)  # the workers have their tasks
        Path("ready").touch()
        [f.result() for f in futures]

def test_after():
    pass
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM])  # SIGINT takes the same handler (in-process test above)
def test_signal_during_a_process_pool_ends_the_session_and_its_pool(pytester: pytest.Pytester,
                                                                    signum: int) -> None:
    """SIGTERM is an interrupt like Ctrl-C: pytest stops with the summary of what ran and exit
    status 2; the pool's workers, forkserver and resource tracker end, with their semaphores and
    folder."""
    pytester.makepyfile(POOL_TEST)
    run = run_faulted(pytester, pytest_command("-q"), signum)
    assert run.ret == pytest.ExitCode.INTERRUPTED, run.out
    assert f"KeyboardInterrupt: {signal.Signals(signum).name} received" in run.out
    assert re.search(r"^1 passed\b.* in ", run.out, re.M)  # the summary of what ran; test_after never started
    name = signal.Signals(signum).name
    assert f"hpcdemo: interrupted by {name}; multiprocessing children (pool workers) killed: " in run.out
    assert run.seconds < 10, f"took {run.seconds:.1f} s to end"
    run.assert_nothing_left()


RAY_TESTS = """
import time
from pathlib import Path
import pytest

@pytest.mark.ray
def test_ray_first(ray_cluster):
    import ray
    assert ray.get(ray.remote(lambda: 1).remote(), timeout=60) == 1

@pytest.mark.ray
def test_ray_waits(ray_cluster):
    Path("ready").touch()
    time.sleep(60)

@pytest.mark.ray
def test_ray_after(ray_cluster):
    pass
"""


@pytest.mark.slow
@needs_ray
def test_sigterm_during_a_ray_test_stops_the_cluster_and_the_session(pytester: pytest.Pytester,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray's SIGTERM handler (sys.exit(15) in the test, then an abort) is replaced by the session's:
    the test is interrupted, not failed, the cluster stops with no process left, exit status 2."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    pytester.makepyfile(RAY_TESTS)
    run = run_faulted(pytester, pytest_command("-q"), signal.SIGTERM, private_tmp=False)
    assert run.ret == pytest.ExitCode.INTERRUPTED, run.out
    assert "KeyboardInterrupt: SIGTERM received" in run.out and "SystemExit" not in run.out
    assert re.search(r"^1 passed\b.* in ", run.out, re.M)
    assert "hpcdemo: ray: local cluster stopped in" in run.out and "; 0 of " in run.out
    assert run.seconds < 20, f"took {run.seconds:.1f} s to end"
    run.assert_nothing_left()


MPI_BLOCKED_TEST = """
import time
from pathlib import Path
import pytest

@pytest.mark.mpi(min_size=2)
def test_first(comm):
    comm.Barrier()

@pytest.mark.mpi(min_size=2)
def test_one_rank_computes_one_waits(comm):
    if comm.rank == 0:
        Path("ready").touch()
        time.sleep(60)  # sees the KeyboardInterrupt
    comm.Barrier()  # rank 1 waits here, where no signal handler runs
"""


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_mpirun_ends_every_rank_within_seconds(pytester: pytest.Pytester, signum: int) -> None:
    """Ctrl-C (or SIGTERM) to mpirun, which forwards it to every rank: the rank blocked in an MPI
    call does not wait out the deadline; the message says the run was interrupted, on which rank."""
    pytester.makepyfile(MPI_BLOCKED_TEST)
    run = run_faulted(pytester, mpirun_command(2, "-q"), signum)
    name = signal.Signals(signum).name
    assert run.ret == pytest.ExitCode.INTERRUPTED, run.out
    # Which rank says it first depends on who aborts first: the rank blocked in the Barrier (when its
    # test has a deadline, its watchdog is armed) or rank 0, whose session-end exchange is cut to 3 s.
    said = rf"hpcdemo: rank [01] of 2: the run was interrupted \({name} on this rank\)"
    assert re.search(said, run.out), run.out
    assert "past its deadline" not in run.out and "ended first" not in run.out
    assert run.seconds < 10, f"took {run.seconds:.1f} s to end"
    run.assert_nothing_left()


def test_the_rank_whose_exit_was_stamped_first_is_named_alone() -> None:
    """A loaded machine can wake the monitor only after the launcher killed the other ranks (seen
    in CI: both ranks named); the kernel's exit stamps still say which ended first."""
    pid_of = {0: 100, 1: 101}
    assert first_to_end([0, 1], {100: (2_000, 9), 101: (1_000, 9)}, pid_of) == [1]
    assert first_to_end([1, 0], {101: (1_000, 9)}, pid_of) == [0, 1]  # an exit not seen: both
    assert first_to_end([1], {}, pid_of) == [1]


MPI_DYING_TEST = """
import os, signal
import pytest

@pytest.mark.mpi(min_size=2)
def test_rank_1_dies(comm):
    if comm.rank == 1:
        {death}
    comm.Barrier()
"""


@pytest.mark.slow
@needs_mpi
@pytest.mark.parametrize("death, named", [("os.kill(os.getpid(), signal.SIGKILL)", "killed by SIGKILL"),
                                          ("os._exit(7)", "exit status 7")])
def test_a_rank_that_dies_is_named_and_its_job_tidied(pytester: pytest.Pytester, death: str,
                                                      named: str) -> None:
    """Hydra then names rank 0's PID and status (it killed rank 0 last); the monitor names rank 1
    and how it ended: from the kernel's process events where this user may listen to them, else
    from its zombie, which the launcher can reap first."""
    pytester.makepyfile(MPI_DYING_TEST.format(death=death))
    run = run_faulted(pytester, mpirun_command(2), None)
    assert run.ret != 0
    pids_line = "hpcdemo: mpi ranks (rank host:pid)"
    header = next(line for line in run.out.splitlines() if line.startswith(pids_line))
    pid = header.split(", 1 ")[1].split(":")[1]
    host = header.split(", 1 ")[1].split(":")[0]
    events = exit_events()
    before = ""  # with the kernel's exit stamps only rank 1 is named, however late the monitor woke
    if events is not None:
        events.close()
    else:
        named = f"({named}|status reaped unread)"
        before = r"(rank 0 \([^)]*\), )?"  # without them, rank 0 too when the monitor woke after its kill
    said = rf"hpcdemo: {before}rank 1 \(pid {pid} on {host}: {named}\) of 2 ended first"
    assert re.search(said, run.out), run.out
    assert run.seconds < 30, f"took {run.seconds:.1f} s to end"
    run.assert_nothing_left()
