"""Chapter "Ray": the guide leaves it an empty heading, so the claims are ours, measured on the
session's cluster (local on 127.0.0.1, or the one RAY_ADDRESS names).

Ray is imported inside the tests (collection stays cheap). Task bodies defined here travel to the
workers by value (``cloudpickle.register_pickle_by_value``): the workers cannot import this file.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.core.measure import at_least, dominant_part_bound, median, scaling_floor
from pytest_hpcdemo.node import scaling

if TYPE_CHECKING:
    from pytest_hpcdemo.ray.cluster import RayCluster

pytestmark = pytest.mark.ray

TIMEOUT = 60.0  # every ray.get and ray.wait here has one; tasks that wait on files have their own
CPU_TASK = 1_500_000  # ~0.1 s of pure-Python work, as in the GIL chapter
ARRAY_SMALL, ARRAY_LARGE = 2**17, 2**22  # float64 elements: 1 MiB and 32 MiB, both in the object store


@pytest.fixture(scope="module")
def ray(ray_cluster: RayCluster) -> Any:
    """The ``ray`` module, with this file's functions sent to the workers by value."""
    import ray

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def spin_after_touch(path: str) -> None:
    """Writes the machine's boot id and its pid to ``path``, then spins in pure Python forever."""
    Path(path).write_text(f"{_boot_id()} {os.getpid()}")
    while True:
        pass


def hold_until(started: str, gate: str) -> str:
    """Writes the machine's boot id and its pid to ``started``, then waits for ``gate`` to exist."""
    Path(started).write_text(f"{_boot_id()} {os.getpid()}")
    return workloads.wait_for_file(gate, "held", TIMEOUT)


def read_marker(path: Path, timeout: float = TIMEOUT) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"the task never started ({path} not written)"
        time.sleep(0.005)
    boot_id, pid = path.read_text().split()
    return boot_id, int(pid)


class RacyCounter:
    """Read, yield for a millisecond, write: updates are lost whenever two calls overlap."""

    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> None:
        current = self.value
        time.sleep(0.001)
        self.value = current + 1

    def get(self) -> int:
        return self.value


def test_no_listener_outside_loopback(ray_cluster: RayCluster, claim) -> None:
    """Every socket the local cluster listens on (GCS, raylet, object manager, agents, workers and
    this driver's core worker) is bound to a loopback address, none to all interfaces."""
    from pytest_hpcdemo.ray.cluster import driver_port, listeners

    if not ray_cluster.local:
        pytest.skip("RAY_ADDRESS names a cluster this session did not start: its binding is its own")
    procs = ray_cluster.processes()
    port = driver_port()
    driver = [s for s in listeners([os.getpid()]) if s.port == port]
    found = driver + listeners([p.pid for p in procs])
    outside = [str(s) for s in found if not s.loopback]
    assert driver, f"this driver's Ray server (port {port}) was not found listening"
    assert len({s.pid for s in found}) >= 3, f"too few listeners found to judge: {found}"
    assert not outside, f"Ray listens outside loopback: {outside}"
    claim(f"{len(found)} listeners in {len({s.pid for s in found})} of {len(procs) + 1} processes, "
          f"all on {sorted({s.address for s in found})}")


def test_cpu_bound_tasks_scale_with_cores(ray, ray_cluster: RayCluster, speedup, hardware) -> None:
    """CPU-bound pure-Python tasks run in parallel on Ray workers: N tasks take about 1/N of the
    serial time (N = usable cores, up to scaling.CHAPTER_WORKERS: why in scaling.chapter_workers;
    Ray tasks on the whole node are benchmarks/test_ray_node.py's), judged like process pools. The
    workers run at the driver's niceness (RAY_worker_niceness=0; Ray's default 15 would lose to any
    other load)."""
    workers = min(scaling.chapter_workers(hardware.usable_cores), ray_cluster.cpus)
    if workers < 2:
        pytest.skip(f"needs 2 usable cores and CPUs; this session has {hardware.usable_cores} cores, "
                    f"the cluster {ray_cluster.cpus} CPUs")
    if not ray_cluster.local:
        pytest.skip("RAY_ADDRESS: the cluster's workers are not this process's children, so their CPU "
                    "counts as foreign load and every round is contested; run it on the local cluster")
    task = ray.remote(workloads.cpu_bound)

    def serial() -> None:
        for _ in range(workers):
            workloads.cpu_bound(CPU_TASK)

    def parallel() -> None:
        ray.get([task.remote(CPU_TASK) for _ in range(workers)], timeout=TIMEOUT)

    floor = scaling_floor(min(workers, hardware.cpu_bound_cores))
    # parallelism counts the CPU of this process and its descendants: the local cluster's processes
    # (raylet, workers, GCS) are all children of this driver.
    speedup(serial, parallel, [at_least("speedup", floor), at_least("parallelism", floor)],
            cores_needed=workers, same_work=True, name=f"ray tasks x{workers} vs serial (workers at nice "
                                       f"{ray_cluster.worker_nice})")


def test_get_keeps_submission_order_and_wait_gives_completion_order(ray, ray_cluster, tmp_path, claim):
    """``ray.get`` on a list returns results in submission order whatever the completion order
    (like ``map``); ``ray.wait(num_returns=1)`` in a loop yields completion order (like
    ``as_completed``); with a timeout it returns what is ready and never raises. Its ready list
    keeps input order, not completion order."""
    keys = [0, 1, 2]
    share = int(ray_cluster.cpus * 10_000 / len(keys)) / 10_000  # all three hold a CPU share at once
    task = ray.remote(workloads.wait_for_file).options(num_cpus=share)
    refs = [task.remote(str(tmp_path / f"go{k}"), k, TIMEOUT) for k in keys]
    ready, not_ready = ray.wait(refs, num_returns=len(refs), timeout=0.1)
    assert ready == [] and not_ready == refs
    release = [2, 0, 1]
    seen: list[int] = []
    pending = list(refs)
    for key in release:
        workloads.touch(str(tmp_path / f"go{key}"))
        (done,), pending = ray.wait(pending, num_returns=1, timeout=TIMEOUT)
        seen.append(ray.get(done, timeout=TIMEOUT))
        if key == 2:  # with a timeout, wait returns what is ready by then: the one released task
            partial, rest = ray.wait(refs, num_returns=len(refs), timeout=0.1)
            assert partial == [refs[2]] and rest == refs[:2]
        if key == 0:  # 2 and 0 are done: the ready list comes in input order, 0 before 2
            both, _ = ray.wait(refs, num_returns=2, timeout=TIMEOUT)
            assert both == [refs[0], refs[2]]
    assert seen == release
    assert ray.get(refs, timeout=TIMEOUT) == keys
    claim(f"released {release}: ray.wait loop gave {seen}, ray.get gave {keys}")


def test_cancel_queued_running_and_forced(ray, ray_cluster, tmp_path, claim) -> None:
    """``ray.cancel``: a queued task raises TaskCancelledError; a running pure-Python task is
    interrupted (unlike ``Future.cancel``, which refuses running work); ``force=True`` ends the
    worker process."""
    from ray.exceptions import TaskCancelledError

    from pytest_hpcdemo.ray.cluster import Proc, wait_gone

    gate = tmp_path / "release"
    blocker = ray.remote(hold_until).options(num_cpus=ray_cluster.cpus)
    held = blocker.remote(str(tmp_path / "held"), str(gate))  # takes every CPU: the next task queues
    read_marker(tmp_path / "held")
    queued = ray.remote(workloads.identity).remote("never")
    assert ray.wait([queued], timeout=0.2)[0] == []
    t0 = time.perf_counter()
    ray.cancel(queued)
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=TIMEOUT)
    queued_s = time.perf_counter() - t0
    workloads.touch(str(gate))
    assert ray.get(held, timeout=TIMEOUT) == "held"

    spin = ray.remote(spin_after_touch).options(max_retries=0)
    timings = {}
    for force in (False, True):
        marker = tmp_path / f"started-{force}"
        ref = spin.remote(str(marker))
        boot_id, pid = read_marker(marker)
        worker = Proc.of(pid)
        t0 = time.perf_counter()
        ray.cancel(ref, force=force)
        with pytest.raises(TaskCancelledError):
            ray.get(ref, timeout=TIMEOUT)
        timings[force] = time.perf_counter() - t0
        if boot_id == _boot_id():  # the worker ran on this machine: see what became of it
            if force:
                assert not wait_gone([worker], timeout=10), f"force=True left worker {pid} running"
            else:
                assert worker.alive(), "the task was not interrupted: its worker was ended"
    claim(f"cancel: queued {queued_s * 1e3:.0f} ms, running {timings[False] * 1e3:.0f} ms (worker kept), "
          f"force {timings[True] * 1e3:.0f} ms (worker ended)")


def test_task_exception_reaches_caller_with_remote_traceback(ray) -> None:
    """A task's exception reaches the caller of ``ray.get`` as RayTaskError, which is also an
    instance of the original class and carries the traceback from the worker."""
    from ray.exceptions import RayTaskError

    ref = ray.remote(workloads.raise_value_error).options(max_retries=0).remote("boom")
    with pytest.raises(ValueError, match="boom") as info:
        ray.get(ref, timeout=TIMEOUT)
    error = info.value
    assert isinstance(error, RayTaskError)
    assert isinstance(error.cause, ValueError)
    text = str(error)
    assert 'workloads.py", line' in text and "in raise_value_error" in text  # the worker's frames
    assert "pid=" in text and f"pid={os.getpid()}," not in text  # from another process


def test_actor_runs_calls_one_at_a_time(ray, claim) -> None:
    """An actor runs its method calls one at a time: a counter actor hit by many concurrent callers
    loses no update without any lock (the threading chapter needs a Lock for that). The same class
    as a threaded actor (``max_concurrency=4``) does lose updates: the race is real."""
    callers, calls = 4, 50

    def hammer(actor: Any) -> int:
        refs: list[Any] = []

        def caller() -> None:
            refs.extend([actor.increment.remote() for _ in range(calls)])

        threads = [threading.Thread(target=caller) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
        ray.get(refs, timeout=TIMEOUT)
        return ray.get(actor.get.remote(), timeout=TIMEOUT)

    counter = ray.remote(RacyCounter)
    serial_actor = counter.options(num_cpus=0).remote()
    threaded_actor = counter.options(num_cpus=0, max_concurrency=callers).remote()
    try:
        serial, threaded = hammer(serial_actor), hammer(threaded_actor)
    finally:
        ray.kill(serial_actor)
        ray.kill(threaded_actor)
    total = callers * calls
    assert serial == total, f"the actor lost updates: {serial} of {total}"
    assert threaded < total, "the threaded actor lost no update: the race window never opened"
    claim(f"actor kept {serial} of {total} updates; threaded actor (max_concurrency={callers}) {threaded}")


def test_get_of_a_put_array_is_zero_copy(ray, speedup) -> None:
    """``ray.get`` of an array put in the object store is zero-copy: read-only, two gets share one
    buffer, and the array's size does not dominate the time of a get. The bound is what that
    says (``measure.dominant_part_bound``, the multiprocessing chapter's shared-memory boundary):
    were the copied bytes exactly half of a 32 MiB get, a 1 MiB one, 32 times less data, would take
    1/2 + 1/64 of its time, a speedup of 33/64; a get that copies nothing stays above it, one
    dominated by a copy falls below."""
    import numpy as np

    small, large = np.arange(ARRAY_SMALL, dtype=np.float64), np.arange(ARRAY_LARGE, dtype=np.float64)
    small_ref, large_ref = ray.put(small), ray.put(large)
    first, second = ray.get(large_ref, timeout=TIMEOUT), ray.get(large_ref, timeout=TIMEOUT)
    assert not first.flags.writeable
    assert np.shares_memory(first, second), "two gets of one object gave two copies"
    assert not np.shares_memory(first, large) and np.array_equal(first, large)
    del first, second
    gets = 100

    def get_small() -> None:
        for _ in range(gets):
            ray.get(small_ref, timeout=TIMEOUT)

    def get_large() -> None:
        for _ in range(gets):
            ray.get(large_ref, timeout=TIMEOUT)

    no_copy = 1 / dominant_part_bound(ARRAY_LARGE / ARRAY_SMALL)  # candidate large, baseline small
    speedup(get_small, get_large, [at_least("speedup", no_copy)], cores_needed=1,
            name=f"ray.get {large.nbytes >> 20} MiB vs {small.nbytes >> 20} MiB array")


def test_passing_a_reference_beats_passing_the_array(ray, speedup) -> None:
    """Tasks given the reference of an array put once are cheaper than tasks given the array
    itself, which Ray serialises into the object store again for every call. "Cheaper" is the
    bound: by reference beats by value (speedup above 1)."""
    import numpy as np

    large = np.arange(ARRAY_LARGE, dtype=np.float64)
    large_ref = ray.put(large)
    task = ray.remote(workloads.array_nbytes)
    calls = 4
    expected = [large.nbytes] * calls

    def by_value() -> None:
        assert ray.get([task.remote(large) for _ in range(calls)], timeout=TIMEOUT) == expected

    def by_reference() -> None:
        assert ray.get([task.remote(large_ref) for _ in range(calls)], timeout=TIMEOUT) == expected

    speedup(by_value, by_reference, [at_least("speedup", 1.0)], cores_needed=1,
            name=f"{calls} tasks on a {large.nbytes >> 20} MiB array: by reference vs by value")


def test_task_overhead_beside_ray_microbenchmark(ray, speedup, benchmark, claim) -> None:
    """A Ray task costs a round trip to a worker: submitting a batch and getting all the results
    at once amortises it, so batched tasks outrun tasks awaited one at a time (the bound: speedup
    above 1). Our batched tasks
    per second are recorded beside the figure of Ray's own ``ray microbenchmark`` ("single client
    tasks async", its code run in this session's cluster), as a ratio."""
    try:  # ray microbenchmark's module imports Ray's client, which needs grpcio
        from pytest_hpcdemo.ray._private_compat import microbenchmark

        ray_perf, timeit = microbenchmark()
    except ImportError as exc:
        pytest.skip(f"Ray's microbenchmark cannot load ({exc}): pip install 'pytest-hpcdemo[ray]'")

    def ray_batch() -> None:
        ray.get([ray_perf.small_value.remote() for _ in range(1000)], timeout=TIMEOUT)

    (reference,) = timeit("single client tasks async", ray_batch, 1000, warmup_time_sec=0)
    ray_rate = reference[1] if reference else float("nan")  # None when TESTS_TO_RUN filters it out

    tasks = 100
    task = ray.remote(workloads.identity)

    def one_at_a_time() -> None:
        for i in range(tasks):
            ray.get(task.remote(i), timeout=TIMEOUT)

    def batched() -> None:
        ray.get([task.remote(i) for i in range(tasks)], timeout=TIMEOUT)

    name = f"{tasks} ray tasks: batched vs one at a time"
    try:
        speedup(one_at_a_time, batched, [at_least("speedup", 1.0)], cores_needed=1, name=name)
    finally:
        figures = benchmark.extra_info["claims"][name]
        sync_rate, batch_rate = tasks / median(figures["baseline_s"]), tasks / median(figures["candidate_s"])
        benchmark.extra_info["ray_tasks_per_s"] = {
            "one_at_a_time": sync_rate, "batched": batch_rate,
            "ray_microbenchmark_single_client_tasks_async": ray_rate, "ratio": batch_rate / ray_rate,
        }
        claim(f"tasks/s: one at a time {sync_rate:.0f}, batched {batch_rate:.0f}; ray microbenchmark "
              f"{ray_rate:.0f} (batched/ray {batch_rate / ray_rate:.2f})")
