"""The oversubscription guard with injected core counts, ranks and thread settings."""

from __future__ import annotations

import pytest

from pytest_hpcdemo.oversubscription import Demand, claim_reason, library_threads


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
