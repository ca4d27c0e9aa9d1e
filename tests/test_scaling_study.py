"""The scaling study's arithmetic with injected core counts: points, work per point, the study's
length on a 128-core node, efficiency floors, Karp-Flatt and the Amdahl fit."""

from __future__ import annotations

import contextlib
import math

import pytest

from pytest_hpcdemo.core.measure import scaling_floor
from pytest_hpcdemo.node import scaling

with contextlib.suppress(ImportError):  # the fit's tests skip without SciPy
    # Loaded at collection: a pytester run in this process may drop a NumPy it first imported.
    import scipy.optimize  # noqa: F401

@pytest.mark.parametrize("cores, expected", [
    (1, [1]), (2, [1, 2]), (6, [1, 2, 4, 6]), (16, [1, 2, 4, 8, 16]),
    (128, [1, 2, 4, 8, 16, 32, 64, 128]), (96, [1, 2, 4, 8, 16, 32, 64, 96]),
])
def test_points_double_up_to_the_usable_cores(cores: int, expected: list[int]) -> None:
    assert scaling.points(cores) == expected


def test_points_refuse_no_cores() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        scaling.points(0)


@pytest.mark.parametrize("cores", [2, 16, 128])
def test_a_round_stops_growing_above_the_strong_points(cores: int) -> None:
    """Up to STRONG_UP_TO workers the baseline runs every share (the same work as the candidate);
    above, one share: a round's serial time is then two shares at any worker count."""
    works = {n: scaling.work_per_point(n, 1000, share=2) for n in scaling.points(cores)}
    for n, w in works.items():
        assert w.tasks == 2 * n
        assert w.same_work == (n <= scaling.STRONG_UP_TO)
        assert w.baseline_shares == (n if n <= scaling.STRONG_UP_TO else 1)
        assert scaling.round_shares(n) <= scaling.STRONG_UP_TO + 1
    assert {scaling.round_shares(n) for n in works if n > scaling.STRONG_UP_TO} <= {2}


def test_efficiency_and_ratio_convert_both_ways() -> None:
    strong, direct = scaling.work_per_point(2, 10), scaling.work_per_point(128, 10)
    assert strong.efficiency(1.8) == pytest.approx(0.9) and strong.ratio(0.9) == pytest.approx(1.8)
    assert direct.efficiency(0.9) == pytest.approx(0.9) and direct.ratio(0.36) == pytest.approx(0.36)
    assert direct.describe() == "1 share serially vs 128 on 128 workers"
    assert strong.describe() == "2 shares serially vs 2 on 2 workers"


def test_claims_at_state_the_floor_as_the_measured_ratio() -> None:
    (one,) = scaling.claims_at(scaling.work_per_point(1, 10), physical=1)
    assert (one.metric, one.op) == ("parallelism", "<=")
    (two,) = scaling.claims_at(scaling.work_per_point(2, 10), physical=2)
    assert (two.metric, two.threshold) == ("speedup", pytest.approx(scaling_floor(2)))
    (node,) = scaling.claims_at(scaling.work_per_point(128, 10), physical=64)
    assert node.threshold == pytest.approx(scaling_floor(64) / 128)
    (flat,) = scaling.claims_at(scaling.work_per_point(4, 10), physical=4, scales=False)
    assert flat.metric == "parallelism"


def test_a_128_core_study_takes_minutes_not_hours() -> None:
    """Five backends, 0.1 s shares, the default budget extended to 9 s a claim: 128 cores need 8
    points each, 6 minutes at most. Strong scaling at every point would need 5 rounds of 12.9 s at
    the last point alone."""
    assert scaling.study_seconds(2, backends=5, share_s=0.1, max_claim_s=9.0) == 2 * 5 * 9.0
    assert scaling.study_seconds(128, backends=5, share_s=0.1, max_claim_s=9.0) <= 6 * 60
    assert scaling.study_seconds(16, backends=5, share_s=0.1, max_claim_s=9.0) <= 4 * 60


@pytest.mark.parametrize("workers, physical, floor", [
    (1, 1, 1.0), (2, 2, 1.35 / 2), (16, 16, scaling_floor(16) / 16), (128, 64, scaling_floor(64) / 128),
    (4, 2, 1.35 / 4),
])
def test_efficiency_floor_counts_physical_cores_only(workers: int, physical: int, floor: float) -> None:
    assert scaling.efficiency_floor(workers, physical) == pytest.approx(floor)


def test_karp_flatt_of_amdahl_speedups_is_the_serial_fraction() -> None:
    for n in (2, 16, 128):
        assert scaling.karp_flatt(scaling.amdahl_speedup(0.1, n), n) == pytest.approx(0.1)
    assert scaling.karp_flatt(128.0, 128) == pytest.approx(0.0)
    assert math.isnan(scaling.karp_flatt(1.0, 1))


def test_point_derives_speedup_and_karp_flatt_intervals_from_efficiency() -> None:
    point = scaling.Point(16, 0.5, (0.4, 0.6))
    assert point.speedup == 8.0 and point.speedup_ci == pytest.approx((6.4, 9.6))
    low, high = point.karp_flatt_ci
    assert low < point.karp_flatt < high  # a higher speedup means a smaller serial fraction
    assert point.karp_flatt == pytest.approx((1 / 8 - 1 / 16) / (1 - 1 / 16))
    assert point.as_dict()["ci"] == pytest.approx([6.4, 9.6])


def test_amdahl_fit_recovers_the_serial_fraction_and_brackets_it() -> None:
    pytest.importorskip("scipy", reason="the Amdahl fit needs: pip install 'pytest-hpcdemo[report]'")
    measured = [(n, scaling.amdahl_speedup(0.05, n)) for n in scaling.points(128)]
    fit = scaling.amdahl_fit([(n, s, s * 0.9, s * 1.1) for n, s in measured])
    assert fit is not None and fit.points == 7
    assert fit.fraction == pytest.approx(0.05, abs=1e-6)
    assert fit.low < fit.fraction < fit.high
    assert scaling.amdahl_fit([(1, 0.98, 0.9, 1.0)]) is None  # one worker says nothing about f
    flat = scaling.amdahl_fit([(2, 1.0, math.nan, math.nan), (4, 1.0, math.nan, math.nan)])
    assert flat is not None and flat.fraction == pytest.approx(1.0, abs=1e-3) and math.isnan(flat.low)


def test_record_point_turns_the_measured_ratio_into_efficiency() -> None:
    figures = {"baseline_s": [0.2] * 5, "candidate_s": [0.2 / 1.8] * 5, "confidence": 0.9,
               "speedup_median": 1.8, "contested_rounds": 0, "rounds": 5}
    extra: dict = {"claims": {"p x2": figures}}
    scaling.record_point(extra, "p x2", "processes", "cpu", scaling.work_per_point(2, 10))
    point = extra["scaling"]
    assert point["efficiency"] == pytest.approx(0.9) and point["speedup"] == pytest.approx(1.8)
    assert point["contested"] is False and point["workers"] == 2
    direct: dict = {"claims": {"p x128": {**figures, "speedup_median": 0.5, "candidate_s": [0.4] * 5}}}
    scaling.record_point(direct, "p x128", "processes", "cpu", scaling.work_per_point(128, 10))
    assert direct["scaling"]["efficiency"] == pytest.approx(0.5) and direct["scaling"]["speedup"] == 64
    unseen: dict = {"claims": {"p x2": {**figures, "undecided_by": "load"}}}  # contention /proc missed
    scaling.record_point(unseen, "p x2", "processes", "cpu", scaling.work_per_point(2, 10))
    assert unseen["scaling"]["contested"] is True  # drawn hollow, out of the fit


@pytest.mark.parametrize("cores, workers", [(1, 1), (2, 2), (4, 4), (16, 4), (128, 4)])
def test_chapter_claims_stop_at_a_few_workers_the_study_goes_on(cores: int, workers: int) -> None:
    assert scaling.chapter_workers(cores) == workers
    assert scaling.points(cores)[-1] == cores  # the study's last point is the whole node
