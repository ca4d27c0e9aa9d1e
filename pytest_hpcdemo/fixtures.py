"""The public fixtures: thin wrappers over hardware, measure, backends and report."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any

import pytest

from . import measure
from .backends import BACKEND_NAMES, Backend, get_backend
from .hardware import Hardware
from .report import ClaimLog
from .session import claim_log, hardware_of, options_of


def record_samples(benchmark: Any, samples: Sequence[float]) -> bool:
    """Store our own timed samples as this test's pytest-benchmark entry.

    pytest-benchmark measures only what it runs itself; our rounds are interleaved with a baseline
    and adaptive in number, so we hand it the candidate's samples through the same two calls its
    ``pedantic`` mode makes (``_make_stats`` then ``update``). pyproject bounds the version for that.
    """
    if benchmark is None or benchmark._mode:
        return False
    benchmark._mode = "hpcdemo measurement"  # used, even when --benchmark-disable drops the figures
    if benchmark.disabled or not samples:
        return False
    stats = benchmark._make_stats(1)
    for seconds in samples:
        stats.update(seconds)
    return True


def assert_verdict(m: measure.Measurement) -> measure.Measurement:
    """Fail a claim that fails, skip (with the figures) one that stays inconclusive."""
    if m.verdict is measure.Verdict.FAILS:
        pytest.fail(f"claim fails: {m.name}: {m.line()}", pytrace=False)
    if m.verdict is measure.Verdict.INCONCLUSIVE:
        pytest.skip(f"inconclusive: {m.name}: {m.reason}: {m.line()}")
    return m


class SpeedupMeter:
    """Measures a candidate against a baseline, records the figures, and asserts the claims."""

    def __init__(self, nodeid: str, hardware: Hardware, settings: measure.Settings, benchmark: Any,
                 log: ClaimLog) -> None:
        self.nodeid = nodeid
        self.hardware = hardware
        self.settings = settings
        self.benchmark = benchmark
        self.log = log

    def __call__(
        self,
        baseline: Callable[[], object],
        candidate: Callable[[], object],
        claims: Sequence[measure.Claim],
        *,
        cores_needed: int = 1,
        name: str = "claim",
    ) -> measure.Measurement:
        m = measure.measure(
            name, baseline, candidate, claims,
            cores_needed=cores_needed, usable_cores=self.hardware.usable_cores, settings=self.settings,
        )
        figures = m.figures()
        record_samples(self.benchmark, figures["candidate_s"])  # type: ignore[arg-type]
        if self.benchmark is not None:
            self.benchmark.extra_info.setdefault("claims", {})[name] = figures
        self.log.record(self.nodeid, f"{name}: {m.line()}", m.verdict.value)
        return assert_verdict(m)


def _open_claim(request: pytest.FixtureRequest) -> None:
    doc = (getattr(request.function, "__doc__", None) or "").strip()
    claim_log(request.config).open(request.node.nodeid, doc.splitlines()[0] if doc else "")


@pytest.fixture(scope="session")
def hardware(pytestconfig: pytest.Config) -> Hardware:
    """What this machine and session have: usable cores, GIL state, backends found."""
    return hardware_of(pytestconfig)


@pytest.fixture
def speedup(request: pytest.FixtureRequest, hardware: Hardware, benchmark: Any) -> SpeedupMeter:
    """``speedup(baseline, candidate, claims, cores_needed=n)``: an interleaved measurement whose
    verdict is asserted (fails) or turned into a skip with the figures (inconclusive)."""
    _open_claim(request)
    return SpeedupMeter(request.node.nodeid, hardware, options_of(request.config).measure_settings, benchmark,
                        claim_log(request.config))


class ClaimNote:
    """Lets a semantics test put its figures on its line of the claim summary."""

    def __init__(self, nodeid: str, log: ClaimLog) -> None:
        self.nodeid, self.log = nodeid, log

    def __call__(self, line: str) -> None:
        self.log.record(self.nodeid, line)


@pytest.fixture
def claim(request: pytest.FixtureRequest) -> ClaimNote:
    """``claim("figure ...")``: a line in the claim summary; the test's outcome gives the verdict."""
    _open_claim(request)
    return ClaimNote(request.node.nodeid, claim_log(request.config))


@pytest.fixture(params=BACKEND_NAMES)
def executor_backend(request: pytest.FixtureRequest) -> Backend:
    """Each executor backend in turn; skipped with the reason when its package or launcher is missing."""
    backend = get_backend(request.param, options_of(request.config).start_method)
    if backend.missing:
        pytest.skip(backend.missing)
    return backend


@pytest.fixture
def executor(executor_backend: Backend) -> Iterator[Callable[[int], Executor]]:
    """``executor(max_workers)`` makes a pool of the current backend; all are shut down afterwards."""
    made: list[Executor] = []

    def make(max_workers: int) -> Executor:
        pool = executor_backend.make(max_workers)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.shutdown(wait=True, cancel_futures=True)
