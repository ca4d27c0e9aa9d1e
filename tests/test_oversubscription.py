"""The oversubscription guard with injected core counts, ranks and thread settings."""

from __future__ import annotations

import pytest

from pytest_hpcdemo.core.claims import SpeedupMeter
from pytest_hpcdemo.node.oversubscription import Demand, claim_reason, library_threads


def test_library_defaults_are_the_usable_cores() -> None:
    assert library_threads(128, environ={}) == {"BLAS": 128, "OpenMP": 128, "Numba": 128}


def test_environment_and_blas_pools_set_the_threads() -> None:
    env = {"OMP_NUM_THREADS": "4", "NUMBA_NUM_THREADS": "2"}
    assert library_threads(16, environ=env) == {"BLAS": 4, "OpenMP": 4, "Numba": 2}
    pools = [{"internal_api": "openblas", "num_threads": 8}, {"internal_api": "openmp", "num_threads": 16}]
    assert library_threads(16, environ={"OMP_NUM_THREADS": "16"}, blas_pools=pools)["BLAS"] == 8
    assert library_threads(16, environ={"OMP_NUM_THREADS": "junk"})["OpenMP"] == 16


@pytest.mark.parametrize("ranks, threads, cores, oversubscribed, total", [
    (1, 2, 2, False, 2), (4, 2, 2, True, 8), (128, 1, 128, False, 128), (64, 2, 128, False, 128),
    (64, 128, 128, True, 8192),
])
def test_demand_is_ranks_times_the_largest_pool(ranks, threads, cores, oversubscribed, total) -> None:
    demand = Demand(ranks, {"BLAS": threads, "Numba": 1}, cores)
    assert (demand.total, demand.oversubscribed) == (total, oversubscribed)
    assert demand.line().endswith("oversubscribed" if oversubscribed else "fits")
    assert f"= {total} of {cores} usable cores" in demand.line()


def test_claim_reason_names_the_arithmetic() -> None:
    assert claim_reason(2, 1, 1, 2) is None
    assert claim_reason(64, 2, 1, 128) is None
    reason = claim_reason(4, 1, 4, 16)
    assert reason is None
    reason = claim_reason(4, 2, 4, 16)
    assert reason == ("the candidate would oversubscribe the cores: 4 workers x 2 threads x 4 ranks on this "
                      "node = 32 busy threads on 16 usable cores")


def meter_on(usable_cores: int, ranks_on_node: int) -> SpeedupMeter:
    """A meter on an injected node: ``usable_cores`` cores, under a launcher with that many ranks here."""
    from dataclasses import replace

    from pytest_hpcdemo.core.hardware import MpiInfo, detect
    from pytest_hpcdemo.core.measure import Settings
    from pytest_hpcdemo.report.claims import ClaimLog

    mpi = MpiInfo("4.1", "5.0", "hydra", ranks_on_node, 0, None, local_size=ranks_on_node)
    hardware = replace(detect(), usable_cores=usable_cores, mpi=mpi)
    return SpeedupMeter("t.py::test_x", hardware, Settings(budget_s=0.05, min_rounds=1), None, ClaimLog())


def test_meter_refuses_a_candidate_that_would_oversubscribe_a_128_core_node() -> None:
    from pytest_hpcdemo.core.measure import at_least

    calls: list[str] = []
    meter = meter_on(128, ranks_on_node=64)
    refused = "inconclusive: 4 workers: the candidate would oversubscribe"
    with pytest.raises(pytest.skip.Exception, match=refused):
        meter(lambda: calls.append("baseline"), lambda: calls.append("candidate"), [at_least("speedup", 1.0)],
              cores_needed=4, threads_per_worker=1, name="4 workers")
    assert calls == []  # never measured
    (record,) = meter.log.records.values()
    assert record.verdict == "inconclusive"
    assert "4 workers x 1 threads x 64 ranks on this node = 256 busy threads on 128 usable cores" \
        in record.line


def test_meter_measures_a_candidate_that_fits() -> None:
    from pytest_hpcdemo.core.measure import at_most

    calls: list[str] = []
    meter = meter_on(128, ranks_on_node=1)
    meter.measure(lambda: calls.append("b"), lambda: calls.append("c"), [at_most("speedup", 10.0)],
                  cores_needed=64, name="fits")
    meter.refuse_oversubscription(2, 64, "fits")  # 64 workers x 2 threads = 128: no refusal
    assert calls[:2] == ["b", "c"]
