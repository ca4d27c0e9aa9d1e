"""The public fixtures: thin wrappers over hardware, measure, backends and claims.

Only pytest is imported here at start-up; each fixture imports what it wraps when first used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from .session import claim_log, hardware_of, options_of

if TYPE_CHECKING:
    from concurrent.futures import Executor  # for the annotations only: its import costs every session

    from ..backends import Backend
    from .benchmark_compat import BenchmarkFixture
    from .claims import ClaimNote, SpeedupMeter
    from .hardware import Hardware

# Kept in step with backends.BACKEND_NAMES (a test checks it) so that collection imports nothing.
BACKEND_NAMES = ("thread", "process", "mpi", "ray")


def open_claim(request: pytest.FixtureRequest) -> None:
    """Put the test on the claim summary, titled by its docstring's first line."""
    doc = (getattr(request.function, "__doc__", None) or "").strip()
    claim_log(request.config).open(request.node.nodeid, doc.splitlines()[0] if doc else "")


@pytest.fixture(scope="session")
def hardware(pytestconfig: pytest.Config) -> Hardware:
    """What this machine and session have: usable cores, GIL state, backends found."""
    return hardware_of(pytestconfig)


@pytest.fixture
def speedup(request: pytest.FixtureRequest, hardware: Hardware, benchmark: BenchmarkFixture) -> SpeedupMeter:
    """``speedup(baseline, candidate, claims, cores_needed=n)``: an interleaved measurement whose
    verdict is asserted (fails) or turned into a skip with the figures (inconclusive)."""
    from functools import partial

    from ..report.progress import Progress
    from .claims import SpeedupMeter

    open_claim(request)
    return SpeedupMeter(request.node.nodeid, hardware, options_of(request.config).measure_settings,
                        benchmark, claim_log(request.config),
                        partial(Progress, request.config, request.node.nodeid))


@pytest.fixture
def claim(request: pytest.FixtureRequest) -> ClaimNote:
    """``claim("figure ...")``: a line in the claim summary; the test's outcome gives the verdict."""
    from .claims import ClaimNote

    open_claim(request)
    return ClaimNote(request.node.nodeid, claim_log(request.config))


@pytest.fixture(params=BACKEND_NAMES)
def executor_backend(request: pytest.FixtureRequest) -> Backend:
    """Each executor backend in turn; skipped with the reason when its package or launcher is missing."""
    from ..backends import get_backend

    backend = get_backend(request.param, options_of(request.config).start_method)
    if backend.missing:
        pytest.skip(backend.missing)
    return backend


@pytest.fixture
def executor(request: pytest.FixtureRequest,
             executor_backend: Backend) -> Iterator[Callable[[int], Executor]]:
    """``executor(max_workers)`` makes a pool of the current backend; all are shut down afterwards,
    each within ``--hpc-pool-grace`` seconds: past it the workers are killed and the test fails
    naming the tasks still pending."""
    from ..backends.teardown import PoolTeardownError, shutdown_within, track

    grace_s = request.config.getoption("hpc_pool_grace")
    made: list[Executor] = []

    def make(max_workers: int) -> Executor:
        pool = track(executor_backend.make(max_workers))
        made.append(pool)
        return pool

    yield make
    errors = []
    for pool in made:
        try:
            shutdown_within(pool, grace_s)
        except PoolTeardownError as exc:
            errors.append(str(exc))
    if errors:
        pytest.fail("; ".join(errors), pytrace=False)
