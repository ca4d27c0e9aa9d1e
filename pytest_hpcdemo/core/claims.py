"""Turning a measurement into a test outcome: pytest-benchmark's entry, the verdict, the summary."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from ..node import memory
from ..node.memory import PeakMemory
from ..node.oversubscription import claim_reason
from ..report.claims import ClaimLog
from ..report.progress import Progress
from . import figures as saved
from . import measure
from .benchmark_compat import BenchmarkFixture, record_samples
from .hardware import Hardware
from .measure import Claim, Measurement


def record_figures(benchmark: BenchmarkFixture | None, name: str, samples: Sequence[float],
                   figures: dict[str, Any]) -> None:
    """A claim's samples become the test's benchmark entry (the first claim's only), and its figures
    go in ``extra_info["claims"][name]``."""
    record_samples(benchmark, samples)
    if benchmark is not None:
        benchmark.extra_info.setdefault(saved.CLAIMS, {})[name] = figures


def enforce(verdict: measure.Verdict, name: str, reason: str, line: str) -> None:
    """Fail a claim that fails, skip (with the figures) one that stays inconclusive."""
    if verdict is measure.Verdict.FAILS:
        pytest.fail(f"claim fails: {name}: {line}", pytrace=False)
    if verdict is measure.Verdict.INCONCLUSIVE:
        pytest.skip(f"inconclusive: {name}: {reason}: {line}")


def assert_verdict(m: measure.Measurement) -> measure.Measurement:
    """:func:`enforce` for a measurement."""
    enforce(m.verdict, m.name, m.reason, m.line())
    return m


class SpeedupMeter:
    """Measures a candidate against a baseline, records the figures, and asserts the claims."""

    def __init__(self, nodeid: str, hardware: Hardware, settings: measure.Settings,
                 benchmark: BenchmarkFixture | None, log: ClaimLog,
                 progress: Callable[[str], Progress] | None = None) -> None:
        self.nodeid = nodeid
        self.hardware = hardware
        self.settings = settings
        self.benchmark = benchmark
        self.log = log
        self.progress = progress  # a claim's name -> what shows its measurement's progress
        self.memory: dict[str, PeakMemory] = {}  # each claim's peak resident memory, by name

    def measure(
        self,
        baseline: Callable[[], object],
        candidate: Callable[[], object],
        claims: Sequence[measure.Claim],
        *,
        cores_needed: int = 1,
        name: str = "claim",
        budget_factor: float = 1.0,
        repeats: int = 1,
        same_work: bool = False,
        expected_inflation: float = math.nan,
        run: measure.Run = measure.timed,
    ) -> measure.Measurement:
        """Interleaved rounds until the claims are decided, without recording or asserting.

        ``budget_factor`` scales ``--hpc-budget`` for a claim whose rounds are slow; ``repeats``,
        ``same_work`` and ``expected_inflation`` are :func:`measure.measure`'s; ``run`` replaces the
        timing of one call (the GPU chapter's device clock)."""
        settings = replace(self.settings, budget_s=self.settings.budget_s * budget_factor)
        peaks = self.memory[name] = PeakMemory(baseline, candidate)
        shown = self.progress(name) if self.progress is not None else None
        try:
            return measure.measure(
                name, baseline, candidate, claims,
                cores_needed=cores_needed, usable_cores=self.hardware.usable_cores, settings=settings,
                run=peaks.wrap(run), same_work=same_work, repeats=repeats,
                expected_inflation=expected_inflation, progress=shown,
            )
        finally:
            if shown is not None:
                shown.close()

    def record(self, m: Measurement) -> None:
        """The candidate's samples become the test's benchmark entry; the figures go in extra_info."""
        figures = m.figures()
        peaks = self.memory.get(m.name)
        figures["memory"] = peaks.figures() if peaks else None
        record_figures(self.benchmark, m.name, figures["candidate_s"], figures)  # type: ignore[arg-type]

    def __call__(self, baseline: Callable[[], object], candidate: Callable[[], object],
                 claims: Sequence[Claim], **options: Any) -> Measurement:
        """:meth:`measure` (same options), :meth:`record`, a summary line, the verdict asserted.

        ``threads_per_worker`` (default 1): busy threads each of the candidate's ``cores_needed``
        workers runs; a candidate that would oversubscribe the usable cores is not measured and
        is reported undecided with the reason."""
        self.refuse_oversubscription(options.pop("threads_per_worker", 1), options.get("cores_needed", 1),
                                     options.get("name", "claim"))
        m = self.measure(baseline, candidate, claims, **options)
        self.record(m)
        why = f" ({m.reason})" if m.reason else ""  # an inconclusive claim says why on its line
        peak = memory.figures_line(self.memory[m.name].figures())
        line = f"{m.name}: {m.line()}{why}{'; ' + peak if peak else ''}"
        self.log.record(self.nodeid, line, m.verdict.value,
                        undecided_by=m.undecided_by, leans_to_fail=m.leans_to_fail)
        return assert_verdict(m)

    def refuse_oversubscription(self, threads_per_worker: int, cores_needed: int, name: str) -> None:
        """Skip, undecided, a claim whose candidate would run more busy threads than usable cores."""
        mpi = self.hardware.mpi
        ranks = mpi.local_size if mpi is not None and mpi.launched else 1
        reason = claim_reason(cores_needed, threads_per_worker, ranks, self.hardware.usable_cores)
        if reason:
            undecided = measure.Verdict.INCONCLUSIVE
            self.log.record(self.nodeid, f"{name}: not measured: {reason}", undecided.value)
            enforce(undecided, name, reason, "not measured")


class ClaimNote:
    """Lets a semantics test put its figures on its line of the claim summary."""

    def __init__(self, nodeid: str, log: ClaimLog) -> None:
        self.nodeid, self.log = nodeid, log

    def __call__(self, line: str) -> None:
        self.log.record(self.nodeid, line)
