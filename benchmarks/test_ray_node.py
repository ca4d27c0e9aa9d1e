"""Ray on the whole node: the scaling study's Ray tasks and the memory of ``ray.get``, next to the
Ray chapter (test_ray.py), so that the session's Ray cluster, up from the first Ray test to the
last, is never up beside other chapters' claims.

Guide (Ray): tasks spread over the cluster's CPUs; ``ray.get`` of an array in the object store is
zero-copy. The scaling points follow benchmarks/test_scaling.py (efficiency measured directly); the
copy is counted in anonymous resident memory, as in benchmarks/test_memory.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
from test_scaling import (
    CPU_TASK,
    SHARE,
    pytest_generate_tests,  # noqa: F401 (the same points: 1, 2, 4, ... usable cores)
    python_share,
)

from pytest_hpcdemo.core import workloads
from pytest_hpcdemo.node import memory, scaling

if TYPE_CHECKING:
    from pytest_hpcdemo.ray.cluster import RayCluster

pytestmark = pytest.mark.ray

RAY_TIMEOUT = 120.0
ARRAY_BYTES = 64 * memory.MIB  # as in test_memory.py: each copy its own mapping


def test_ray_get_of_a_put_array_adds_no_copy(ray_cluster: RayCluster, claim) -> None:
    """``ray.get`` of an array put in the object store maps the store's pages (shared memory): the
    driver's anonymous memory grows by under a tenth of the array, where ``np.copy`` of the result
    adds one whole copy (between 0.9 and 1.1), which shows this measure sees a copy."""
    import ray

    ref = ray.put(np.ones(ARRAY_BYTES // 8))
    before = memory.anonymous_bytes() or 0
    got = ray.get(ref, timeout=60)
    float(np.sum(got))  # every page read
    after_get = memory.anonymous_bytes() or 0
    copied = np.copy(got)
    after_copy = memory.anonymous_bytes() or 0
    del copied, got
    zero, one = (after_get - before) / ARRAY_BYTES, (after_copy - after_get) / ARRAY_BYTES
    claim(f"ray.get of a {ARRAY_BYTES // memory.MIB} MiB array: {zero:.2f} copies; np.copy of it: {one:.2f}")
    assert zero < 0.1
    assert 0.9 <= one <= 1.1


def test_ray_tasks_scale_to_the_node(speedup, benchmark, hardware, ray_cluster: RayCluster,
                                     workers: int) -> None:
    """CPU-bound Ray tasks over N of the cluster's CPUs keep the efficiency floor up to the node."""
    import ray

    if not ray_cluster.local:
        pytest.skip("RAY_ADDRESS: the cluster's workers are not this process's children, so their CPU "
                    "counts as foreign load and every round is contested; run it on the local cluster")
    if workers > ray_cluster.cpus:
        pytest.skip(f"the cluster has {ray_cluster.cpus} CPUs, fewer than {workers} workers")
    work = scaling.work_per_point(workers, CPU_TASK, share=SHARE)
    # A task asks for cpus / workers CPUs, so ``workers`` of them run at a time: as many as in a pool.
    task = ray.remote(workloads.cpu_bound).options(num_cpus=ray_cluster.cpus / workers)

    def parallel() -> None:
        ray.get([task.remote(work.task_size) for _ in range(work.tasks)], timeout=RAY_TIMEOUT)

    scaling.measure_point(speedup, benchmark.extra_info, "ray tasks", "pure-Python CPU-bound", work,
                          python_share, parallel, scaling.physical_cores(hardware))
