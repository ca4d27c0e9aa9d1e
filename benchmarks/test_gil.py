"""Chapter "Multiple Threading" and its "Global Interpreter Lock" section, measured.

Guide: "multi-threads code in multi-cores system can only run one thread at a time ... So multiple
threading is suitable for IO bound mission, not the CPU bound mission".
"""

from __future__ import annotations

import threading
from collections import Counter as Multiset
from concurrent.futures import ThreadPoolExecutor
from queue import Queue

import pytest

from pytest_hpcdemo.backends.processes import make_process_pool_factory
from pytest_hpcdemo.backends.teardown import bounded
from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.core.measure import SINGLE_CORE_CEILING, at_least, at_most, scaling_floor
from pytest_hpcdemo.node import scaling

# Fixed sizes (never calibrated from a timing): ~0.1 s of pure-Python work per task here.
CPU_TASK = 1_500_000
NUMPY_SIZE, NUMPY_REPEATS = 1_000_000, 4
IO_TASKS, IO_SECONDS = 8, 0.05


def test_start_and_join(claim) -> None:
    """A thread runs its target after start(), join() waits for it, and active_count() returns to
    what it was (guide: "wait this thread finished running, then run following code")."""
    before = threading.active_count()
    running, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def job() -> None:
        seen["current"] = threading.current_thread().name
        running.set()
        release.wait(10)

    thread = threading.Thread(target=job, name="thread_job")
    thread.start()
    assert running.wait(10)
    assert threading.active_count() == before + 1
    assert thread in threading.enumerate()
    release.set()
    thread.join(10)
    assert not thread.is_alive()
    assert seen["current"] == "thread_job"
    assert threading.active_count() == before
    claim(f"active_count {before} -> {before + 1} -> {threading.active_count()}")


def test_queue_collects_every_result(claim) -> None:
    """A Queue gets every thread's result (guide: "Quene function: get the results from multiple
    threads"). The order is whatever the threads finished in: compared as a multiset, shown."""
    data = [[1, 2, 3], [3, 4, 5], [4, 4, 4], [5, 5, 5]]
    q: Queue[list[int]] = Queue()

    def job(values: list[int]) -> None:
        q.put([v**2 for v in values])

    threads = [threading.Thread(target=job, args=(d,)) for d in data]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    results = [q.get_nowait() for _ in data]
    assert q.empty()
    expected = [[v**2 for v in d] for d in data]
    assert Multiset(map(tuple, results)) == Multiset(map(tuple, expected))
    claim(f"results arrived in order {[expected.index(r) for r in results]}")


def test_lock_prevents_lost_updates(claim) -> None:
    """Without a Lock a read-modify-write race loses updates; with one none is lost (guide: "GIL
    lock function"). The GIL does not make ``x = x + 1`` atomic."""
    n, workers = 2000, 4

    def run(lock: threading.Lock | None) -> int:
        counter = workloads.Counter()
        threads = [threading.Thread(target=workloads.racy_increments, args=(counter, n, lock))
                   for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return counter.value

    unlocked, locked = run(None), run(threading.Lock())
    assert locked == n * workers, f"a Lock must lose nothing; got {locked} of {n * workers}"
    assert unlocked < n * workers, "the unlocked race lost no update: the race window never opened"
    claim(f"unlocked kept {unlocked} of {n * workers} updates; locked kept {locked}")


@pytest.mark.cores(2)
def test_cpu_bound_threads_scale_only_without_the_gil(speedup, hardware) -> None:
    """CPU-bound pure-Python work on N threads: with the GIL (every build but a free-threaded one
    with the GIL off) they are no faster than serial and together never use more than one core,
    since the GIL lets one thread run at a time (guide: "GIL is not suitable for CPU bound task").
    Without the GIL the guide's claim does not hold and this one flips: the threads speed the work
    up and use N cores, both by the scaling floor, as processes do. Up to scaling.CHAPTER_WORKERS
    threads (why: scaling.chapter_workers); the whole node is benchmarks/test_scaling.py's."""
    workers = scaling.chapter_workers(hardware.usable_cores)
    with bounded(ThreadPoolExecutor(workers)) as pool:
        def serial() -> None:
            for _ in range(workers):
                workloads.cpu_bound(CPU_TASK)

        def threaded() -> None:
            list(pool.map(workloads.cpu_bound, [CPU_TASK] * workers))

        if hardware.gil_enabled:
            claims = [at_most("speedup", SINGLE_CORE_CEILING), at_most("parallelism", SINGLE_CORE_CEILING)]
        else:  # free-threaded: the guide's claim does not hold, and this test says so by flipping
            claims = [at_least("speedup", scaling_floor(min(workers, hardware.cpu_bound_cores))),
                      at_least("parallelism", scaling_floor(workers))]
        gil = "GIL enabled" if hardware.gil_enabled else "GIL disabled"
        speedup(serial, threaded, claims, cores_needed=workers, same_work=True,
                name=f"threads x{workers} vs serial ({gil})")


@pytest.mark.cores(2)
def test_processes_speed_up_cpu_bound_work(speedup, hardware, pytestconfig) -> None:
    """The same CPU-bound work on N processes is faster than serial and uses N cores: processes
    have one GIL each. (The guide stops at threads; this is the way round the GIL it implies.) Up
    to scaling.CHAPTER_WORKERS processes (why: scaling.chapter_workers); the whole node is
    benchmarks/test_scaling.py's. Twice the budget: its rounds vary more than the other claims'
    (the pool's CPU inflation moves from round to round); with one, 7 of 20 idle runs here ended
    undecided at about 27 rounds, each "about 6-12 more rounds (~2-5 s) would likely decide it"."""
    workers = scaling.chapter_workers(hardware.usable_cores)
    make_pool = make_process_pool_factory(pytestconfig.getoption("hpc_start_method"))
    with bounded(make_pool(workers)) as pool:
        def serial() -> None:
            for _ in range(workers):
                workloads.cpu_bound(CPU_TASK)

        def parallel() -> None:
            list(pool.map(workloads.cpu_bound, [CPU_TASK] * workers))

        floor = scaling_floor(min(workers, hardware.cpu_bound_cores))
        speedup(serial, parallel, [at_least("speedup", floor), at_least("parallelism", floor)],
                cores_needed=workers, same_work=True, name=f"processes x{workers} vs serial",
                budget_factor=2.0)


@pytest.mark.cores(2)
def test_numpy_releases_the_gil(speedup, hardware) -> None:
    """NumPy's elementwise loops release the GIL, so NumPy work does speed up on threads: the
    guide's "threads are for IO" is true of pure-Python code only. Up to scaling.CHAPTER_WORKERS
    threads (why: scaling.chapter_workers); the node's memory bandwidth on every core is
    benchmarks/test_limits.py's."""
    workers = scaling.chapter_workers(hardware.usable_cores)
    with bounded(ThreadPoolExecutor(workers)) as pool:
        args = [NUMPY_SIZE] * workers, [NUMPY_REPEATS] * workers

        def serial() -> None:
            for _ in range(workers):
                workloads.numpy_ufuncs(NUMPY_SIZE, NUMPY_REPEATS)

        def threaded() -> None:
            list(pool.map(workloads.numpy_ufuncs, *args))

        floor = scaling_floor(min(workers, hardware.cpu_bound_cores))
        speedup(serial, threaded, [at_least("speedup", floor)], cores_needed=workers, same_work=True,
                name=f"numpy threads x{workers} vs serial")


def test_threads_overlap_io_waits(speedup) -> None:
    """IO-bound waits overlap on threads: N waits take about 1/N of the serial time, whatever the
    number of cores (guide: "multiple threading is suitable for IO bound mission")."""
    with bounded(ThreadPoolExecutor(IO_TASKS)) as pool:
        def serial() -> None:
            for _ in range(IO_TASKS):
                workloads.io_wait(IO_SECONDS)

        def threaded() -> None:
            list(pool.map(workloads.io_wait, [IO_SECONDS] * IO_TASKS))

        # The claim's own definition of "about 1/N": at most twice the ideal time, so a speedup of
        # at least N/2 (waits that overlapped only in pairs would give 2). Sleeps need no core, so
        # no machine figure enters the bound, and load does not enter the verdict.
        speedup(serial, threaded, [at_least("speedup", IO_TASKS / 2)], cores_needed=0,
                name=f"io waits x{IO_TASKS} on threads vs serial")

