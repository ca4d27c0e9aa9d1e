"""Chapter "mpi4py" (empty in the guide: the claims are ours), run as ``mpirun -n 4 pytest -m mpi``.

Every test runs on every rank; the ``comm`` fixture gives each a fresh duplicate of COMM_WORLD and
``mpi_benchmark`` times with the same rounds on every rank, a barrier before each round and the
slowest rank's time. Point-to-point figures follow the OSU method: ping-pong one-way latency, and
bandwidth from a window of non-blocking sends closed by an acknowledgement (window 64, fewer for
large messages so that a window stays under 16 MiB). Ranks 0 and 1 exchange; the others wait.
Under more ranks than cores, times are those of a crowded machine: only ratios are asserted.
"""

from __future__ import annotations

import ctypes
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_hpcdemo.core.hardware import beside_python
from pytest_hpcdemo.core.measure import at_least, scaling_floor
from pytest_hpcdemo.node import limits

np = pytest.importorskip("numpy")

pytestmark = pytest.mark.mpi

SIZES = (8, 1024, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024)
SMALL, LARGE = SIZES[0], SIZES[-1]
REPS = 20  # round trips per timed call: the loop, not one call, is what a round times
C_SOURCE = Path(__file__).parent / "c" / "pingpong.c"


def window_for(nbytes: int) -> int:
    return max(1, min(64, (16 << 20) // nbytes))


class PingPong:
    """OSU-style loops between ranks 0 and 1 of ``comm`` on ``nbytes`` of NumPy data, in mpi4py's
    buffer form (``Send``/``Recv``: the array's memory is sent as is) and its pickle form
    (``send``/``recv``: any object, serialised)."""

    def __init__(self, comm: Any, nbytes: int) -> None:
        self.comm, self.rank, self.nbytes = comm, comm.Get_rank(), nbytes
        self.buf = np.zeros(nbytes, dtype=np.uint8)
        self.window = window_for(nbytes)

    def buffer(self) -> None:
        comm, buf = self.comm, self.buf
        for _ in range(REPS):
            if self.rank == 0:
                comm.Send(buf, 1)
                comm.Recv(buf, 1)
            elif self.rank == 1:
                comm.Recv(buf, 0)
                comm.Send(buf, 0)

    def pickle(self) -> None:
        comm = self.comm
        for _ in range(REPS):
            if self.rank == 0:
                comm.send(self.buf, 1)
                self.buf = comm.recv(source=1)
            elif self.rank == 1:
                comm.send(comm.recv(source=0), 0)

    def buffer_window(self) -> None:
        from mpi4py import MPI

        comm, buf = self.comm, self.buf
        if self.rank == 0:
            MPI.Request.Waitall([comm.Isend(buf, 1, tag=2) for _ in range(self.window)])
            comm.Recv(bytearray(1), 1, tag=3)
        elif self.rank == 1:
            MPI.Request.Waitall([comm.Irecv(buf, 0, tag=2) for _ in range(self.window)])
            comm.Send(bytearray(1), 0, tag=3)

    def pickle_window(self) -> None:
        from mpi4py import MPI

        comm = self.comm
        if self.rank == 0:
            MPI.Request.waitall([comm.isend(self.buf, 1, tag=2) for _ in range(self.window)])
            comm.recv(source=1, tag=3)
        elif self.rank == 1:
            for _ in range(self.window):
                comm.recv(source=0, tag=2)
            comm.send(None, 0, tag=3)

    def latency(self, seconds_per_call: float) -> float:
        return seconds_per_call / (2 * REPS)

    def bandwidth(self, seconds_per_call: float) -> float:
        return self.window * self.nbytes / seconds_per_call


def size_label(nbytes: int) -> str:
    return f"{nbytes >> 20} MiB" if nbytes >= 1 << 20 else f"{nbytes >> 10} KiB" if nbytes >= 1024 \
        else f"{nbytes} B"


def test_every_rank_sees_the_same_size_and_a_distinct_rank(comm, claim) -> None:
    """Every rank of COMM_WORLD sees the same size, and the ranks are 0 .. size-1, each once."""
    seen = comm.allgather((comm.Get_rank(), comm.Get_size()))
    assert {size for _, size in seen} == {comm.Get_size()}
    assert sorted(rank for rank, _ in seen) == list(range(comm.Get_size()))
    claim(f"{comm.Get_size()} ranks: sizes all {comm.Get_size()}, ranks {sorted(r for r, _ in seen)}")


def test_hello_world_reaches_rank_0(comm, claim) -> None:
    """Hello world: each rank's greeting (rank, size, host) reaches rank 0 by ``gather``."""
    rank, size = comm.Get_rank(), comm.Get_size()
    greetings = comm.gather(f"Hello from rank {rank} of {size} on {socket.gethostname()}", root=0)
    if rank != 0:
        assert greetings is None
        return
    assert [g.split(" on ")[0] for g in greetings] == [f"Hello from rank {r} of {size}" for r in range(size)]
    claim(" | ".join(greetings) if size <= 2 else f"{greetings[0]} | ... | {greetings[-1]}")


@pytest.mark.mpi(min_size=2)
def test_pingpong_latency_and_bandwidth_over_message_sizes(comm, mpi_benchmark, claim) -> None:
    """Ping-pong latency and windowed bandwidth from 8 B to 4 MiB, buffer and pickle forms, all in
    ``extra_info["pingpong"]``: bandwidth grows with the message size, from 8 B, where the
    per-message cost dominates, to 4 MiB. "Grows" over a 2^19-fold range of sizes is read as an
    order of magnitude, as "many times" is in the Numba chapter: the claim's own definition (a
    fixed per-message cost alone would give 2^19 times). The 4 MiB bandwidth is also stated as a
    fraction of one core's memory copy, the node's limit for a message that crosses its memory."""
    table: dict[str, dict[str, float]] = {}
    for nbytes in SIZES:
        pp = PingPong(comm, nbytes)
        row = {}
        for form, loop, window in (("buffer", pp.buffer, pp.buffer_window),
                                   ("pickle", pp.pickle, pp.pickle_window)):
            lat = mpi_benchmark(loop, name=f"{form} latency {size_label(nbytes)}", budget_factor=0.03)
            bw = mpi_benchmark(window, name=f"{form} bandwidth {size_label(nbytes)}", budget_factor=0.03)
            row[f"{form}_latency_us"] = pp.latency(lat["median_s"]) * 1e6
            row[f"{form}_bandwidth_MBps"] = pp.bandwidth(bw["median_s"]) / 1e6
        table[size_label(nbytes)] = row
    mpi_benchmark.benchmark.extra_info["pingpong"] = table
    small, large = table[size_label(SMALL)], table[size_label(LARGE)]
    # The node's limit for a message between ranks on one node: one core's memory copy (rank 0's,
    # measured now), as the shared-memory transport moves the message through memory.
    copy = comm.bcast(limits.copy_rate() if comm.Get_rank() == 0 else None, root=0)
    share = large["buffer_bandwidth_MBps"] * 1e6 / copy
    mpi_benchmark.benchmark.extra_info["pingpong_vs_memory"] = {
        "one_core_copy_MBps": copy / 1e6, "buffer_4MiB_fraction_of_copy": share}
    assert large["buffer_bandwidth_MBps"] > 10 * small["buffer_bandwidth_MBps"]
    claim("; ".join(f"{form}: {small[f'{form}_latency_us']:.1f} us at 8 B, "
                    f"{large[f'{form}_bandwidth_MBps']:.0f} MB/s at 4 MiB" for form in ("buffer", "pickle"))
          + f"; buffer at 4 MiB = {share:.2f} of one core's memory copy ({copy / 1e6:.0f} MB/s)")


@pytest.mark.mpi(min_size=2)
def test_buffer_send_beats_pickle_send_for_large_arrays(comm, mpi_benchmark) -> None:
    """Buffer-based ``Send``/``Recv`` of a 4 MiB NumPy array beats pickle-based ``send``/``recv``
    of the same array: the pickle form serialises, copies and allocates on every message. "Beats"
    is the bound: the buffer form takes less time (speedup above 1)."""
    pp = PingPong(comm, LARGE)
    mpi_benchmark.compare(pp.pickle, pp.buffer, [at_least("speedup", 1.0)], cores_needed=2,
                          name="4 MiB ping-pong: Send/Recv vs send/recv (pickle)")


def busy(seconds: float) -> None:
    """Computation that needs the CPU (not a sleep) for about ``seconds``."""
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.mpi(min_size=2)
def test_nonblocking_transfer_overlaps_computation(comm, mpi_benchmark, hardware) -> None:
    """Non-blocking ``Isend``/``Irecv`` let both ranks compute while a 4 MiB message is under way.
    Blocking: rank 0's ``Send`` waits until rank 1 has computed and posts its ``Recv``, then rank 0
    computes: two computations one after the other. Non-blocking: both compute at once. "At once"
    is what ``scaling_floor(2)`` bounds: the least speedup that shows two workers' CPU-bound work
    running at the same time (ideal here (2w + t) / (w + t), about 1.9 with w = 20 ms of work and
    t < 1 ms for the transfer)."""

    if hardware.usable_cores < 2:
        pytest.skip(f"needs 2 usable cores for two ranks to compute at once; this session has "
                    f"{hardware.usable_cores}")
    rank, buf, work = comm.Get_rank(), np.zeros(LARGE, dtype=np.uint8), 0.02

    def blocking() -> None:
        if rank == 0:
            comm.Send(buf, 1)
            busy(work)
        elif rank == 1:
            busy(work)
            comm.Recv(buf, 0)

    def nonblocking() -> None:
        if rank in (0, 1):
            request = comm.Isend(buf, 1) if rank == 0 else comm.Irecv(buf, 0)
            busy(work)
            request.Wait()

    mpi_benchmark.compare(blocking, nonblocking, [at_least("speedup", scaling_floor(2))], cores_needed=2,
                          name="4 MiB + 20 ms of work on each side: Isend/Irecv vs Send/Recv")


def collectives(comm: Any) -> dict[str, tuple[Callable[[], Any], Callable[[Any], bool]]]:
    """Each collective in object and buffer form: (call, check of its result on this rank)."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    mine = np.full(4, rank, dtype=np.float64)
    every = np.arange(size * 4, dtype=np.float64)
    total = sum(range(size))
    out_one, out_all = np.empty(4), np.empty(size * 4)
    root = rank == 0

    def into(out: np.ndarray, call: Callable[[], Any]) -> Callable[[], np.ndarray]:
        return lambda: (call(), out)[1]

    bcast_buf = np.arange(4, dtype=np.float64) if root else np.empty(4)
    return {
        "bcast": (lambda: comm.bcast({"from": 0} if root else None, root=0), lambda r: r == {"from": 0}),
        "Bcast": (into(bcast_buf, lambda: comm.Bcast(bcast_buf, root=0)),
                  lambda r: list(r) == [0, 1, 2, 3]),
        "scatter": (lambda: comm.scatter(list(range(size)) if root else None, root=0), lambda r: r == rank),
        "Scatter": (into(out_one, lambda: comm.Scatter(every if root else None, out_one, root=0)),
                    lambda r: list(r) == list(range(rank * 4, rank * 4 + 4))),
        "gather": (lambda: comm.gather(rank, root=0),
                   lambda r: r == list(range(size)) if root else r is None),
        "Gather": (into(out_all, lambda: comm.Gather(mine, out_all if root else None, root=0)),
                   lambda r: not root or list(r) == [float(i // 4) for i in range(size * 4)]),
        "allgather": (lambda: comm.allgather(rank), lambda r: r == list(range(size))),
        "Allgather": (into(out_all, lambda: comm.Allgather(mine, out_all)),
                      lambda r: list(r) == [float(i // 4) for i in range(size * 4)]),
        "reduce": (lambda: comm.reduce(rank, op=MPI.SUM, root=0), lambda r: r == (total if root else None)),
        "Reduce": (into(out_one, lambda: comm.Reduce(mine, out_one if root else None, op=MPI.SUM, root=0)),
                   lambda r: not root or list(r) == [total] * 4),
        "allreduce": (lambda: comm.allreduce(rank, op=MPI.SUM), lambda r: r == total),
        "Allreduce": (into(out_one, lambda: comm.Allreduce(mine, out_one, op=MPI.SUM)),
                      lambda r: list(r) == [total] * 4),
    }


def test_collectives_are_correct_on_every_rank_and_timed(comm, mpi_benchmark, claim) -> None:
    """``bcast``, ``scatter``, ``gather``, ``allgather``, ``reduce``, ``allreduce`` in object form and
    their buffer forms give the right result on every rank (checked after each timed run too)."""
    timings = {}
    for name, (call, check) in collectives(comm).items():
        assert check(call()), f"{name} gave a wrong result on rank {comm.Get_rank()}"
        timings[name] = mpi_benchmark(call, name=name, budget_factor=0.02)["median_s"] * 1e6
        assert check(call()), f"{name} gave a wrong result on rank {comm.Get_rank()} after timing"
    claim(f"{comm.Get_size()} ranks, us per call: "
          + ", ".join(f"{name} {us:.1f}" for name, us in timings.items()))


@pytest.mark.mpi(min_size=2)
def test_allreduce_beats_reduce_then_bcast(comm, mpi_benchmark) -> None:
    """``Allreduce`` is one collective; ``Reduce`` to a root and ``Bcast`` back is two, one after the
    other: on 8 doubles the single collective is faster. "Faster" is the bound (speedup above 1): a
    margin would be a property of the MPI library and the machine (1.07 on 2 ranks here, where
    Reduce + Bcast of 2 ranks is two single messages). Not with more ranks than cores: there
    Allreduce's exchange among all ranks waits on descheduled ones (measured here: 0.4-0.8x), so
    the claim is left to a run with at most one rank per core."""
    from mpi4py import MPI

    run = mpi_benchmark.run
    if run["oversubscribed"]:
        pytest.skip(f"{run['size']} ranks on {run['usable_cores']} usable cores: the claim needs a rank "
                    f"per core: run: mpirun -n {run['usable_cores']} pytest -m mpi")
    mine, out = np.full(8, comm.Get_rank(), dtype=np.float64), np.empty(8)

    def reduce_bcast() -> None:
        comm.Reduce(mine, out, op=MPI.SUM, root=0)
        comm.Bcast(out, root=0)

    mpi_benchmark.compare(reduce_bcast, lambda: comm.Allreduce(mine, out, op=MPI.SUM),
                          [at_least("speedup", 1.0)], name="8 doubles: Allreduce vs Reduce + Bcast")
    assert list(out) == [float(sum(range(comm.Get_size())))] * 8


# ---------------------------------------------------------------------------------------------
# The limit: the same loops in C, in the same job


def mpicc() -> str:
    found = beside_python("mpicc")
    if found is None:
        pytest.skip("no mpicc: pip install 'pytest-hpcdemo[mpi]' (the mpich wheel brings one)")
    return found


@pytest.fixture(scope="module")
def c_pingpong(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """benchmarks/c/pingpong.c built with the MPI's mpicc on each rank (into its own temp dir)."""
    if not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler (the mpich wheel's mpicc needs one): apt-get install gcc")
    out = tmp_path_factory.mktemp("c") / "libpingpong.so"
    build = subprocess.run([mpicc(), "-O2", "-shared", "-fPIC", "-o", str(out), str(C_SOURCE)],
                           capture_output=True, text=True, timeout=120)
    if build.returncode != 0:
        pytest.fail(f"building {C_SOURCE.name} failed:\n{build.stdout}{build.stderr}", pytrace=False)
    lib = ctypes.CDLL(str(out))
    for fn in (lib.hpcdemo_pingpong, lib.hpcdemo_window):  # (MPI_Fint comm, char *buf, int, int)
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        fn.restype = ctypes.c_int
    return lib


@pytest.mark.mpi(min_size=2)
def test_mpi4py_latency_within_3x_of_c_at_8_bytes(comm, mpi_benchmark, c_pingpong) -> None:
    """mpi4py's buffer ``Send``/``Recv`` ping-pong of 8 B takes less than 3x the time of the same
    loop in C (same job, same MPI library, same thread level): the Python overhead per message is
    of the order of the MPI latency itself, not orders of magnitude above it. The bound is the
    claim's own definition of "of the order of": at most 3x, i.e. C speedup at least one third."""
    pp = PingPong(comm, SMALL)
    handle, address = comm.py2f(), pp.buf.ctypes.data
    figures = mpi_benchmark.compare(lambda: c_pingpong.hpcdemo_pingpong(handle, address, SMALL, REPS),
                                    pp.buffer, [at_least("speedup", 1 / 3)], cores_needed=2,
                                    name="8 B ping-pong: mpi4py Send/Recv vs C")
    figures["mpi4py_over_c_latency"] = 1 / figures["speedup_median"]
    figures["c_latency_us"] = pp.latency(figures["baseline_median_s"]) * 1e6
    figures["mpi4py_latency_us"] = pp.latency(figures["candidate_median_s"]) * 1e6


@pytest.mark.mpi(min_size=2)
def test_mpi4py_bandwidth_within_0_7x_of_c_at_4_mib(comm, mpi_benchmark, c_pingpong) -> None:
    """mpi4py's buffer ``Isend``/``Irecv`` window of 4 MiB messages reaches at least 0.7x the
    bandwidth of the same window in C: for large NumPy arrays mpi4py passes the memory to MPI
    without copies, so the MPI library, not Python, sets the pace. The bound is the claim's own
    definition of "sets the pace": Python's share of the time is under 30% (at least 0.7x of C)."""
    pp = PingPong(comm, LARGE)
    handle, address = comm.py2f(), pp.buf.ctypes.data
    figures = mpi_benchmark.compare(lambda: c_pingpong.hpcdemo_window(handle, address, LARGE, pp.window),
                                    pp.buffer_window, [at_least("speedup", 0.7)], cores_needed=2,
                                    name="4 MiB window: mpi4py Isend/Irecv vs C")
    figures["mpi4py_over_c_bandwidth"] = figures["speedup_median"]
    figures["c_bandwidth_MBps"] = pp.bandwidth(figures["baseline_median_s"]) / 1e6
    figures["mpi4py_bandwidth_MBps"] = pp.bandwidth(figures["candidate_median_s"]) / 1e6
