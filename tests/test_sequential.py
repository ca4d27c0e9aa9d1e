"""The error rates and power of measure.measure's sequential verdicts, proven by simulation.

Each simulated claim drives the real loop (``measure.measure``) with a synthetic ``run`` that
returns Timing objects and a synthetic clock that advances by their wall times: 0.2 s calls with
10% log-normal noise per call, the default settings (3 s budget, 3x extension, 5 to 60 rounds,
90% confidence). Seeded, so every run gives the same figures; the bounds allow three standard
errors of Monte Carlo noise on top of the promised rate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from pytest_hpcdemo.core import measure
from pytest_hpcdemo.core.measure import Claim, Settings, Timing, Verdict, at_least, at_most

CALL_S = 0.2
NOISE = 0.1  # sigma of log(wall) per call
SETTINGS = Settings()
ALPHA_SIDE = (1 - SETTINGS.confidence) / 2  # promised: P(holds) and P(fails) on the threshold


class SyntheticMachine:
    """Calls whose wall time is CALL_S (baseline) or CALL_S / speedup (candidate) times log-normal
    noise; the clock is the sum of the walls so far; CPU equals wall on both sides times the
    candidate's parallelism, with no foreign load."""

    def __init__(self, rng: random.Random, speedup: float, parallelism: float = 1.0) -> None:
        self.rng, self.speedup, self.parallelism, self.now = rng, speedup, parallelism, 0.0

    def clock(self) -> float:
        return self.now

    def run(self, fn: Callable[[], object]) -> Timing:
        mean = CALL_S if fn is baseline else CALL_S / self.speedup
        wall = mean * math.exp(self.rng.gauss(0.0, NOISE))
        self.now += wall
        cpu = wall if fn is baseline else wall * self.parallelism * math.exp(self.rng.gauss(0.0, NOISE))
        return Timing(wall, cpu, cpu)


def baseline() -> None:
    pass


def candidate() -> None:
    pass


def simulate(seed: int, trials: int, speedup: float, claims: list[Claim],
             parallelism: float = 1.0) -> list[measure.Measurement]:
    rng = random.Random(seed)
    results = []
    for _ in range(trials):
        machine = SyntheticMachine(rng, speedup, parallelism)
        results.append(measure.measure("sim", baseline, candidate, claims, cores_needed=1, usable_cores=2,
                                       settings=SETTINGS, clock=machine.clock, run=machine.run))
    return results


def margin(rate: float, trials: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / trials)


def share(results: list[measure.Measurement], verdict: Verdict) -> float:
    return sum(m.verdict is verdict for m in results) / len(results)


TRIALS_H0 = 800


@pytest.mark.parametrize("claim", [at_least("speedup", 1.0), at_most("speedup", 1.0)], ids=str)
def test_a_claim_on_its_threshold_holds_or_fails_at_most_the_promised_rate(claim: Claim) -> None:
    """True median speedup exactly on the bound: across all looks, P(holds) and P(fails) are each
    at most (1 - confidence) / 2 = 5% (the loop of main before the sequential plan: 11.4% and 10.2%)."""
    results = simulate(11, TRIALS_H0, 1.0, [claim])
    for verdict in (Verdict.HOLDS, Verdict.FAILS):
        assert share(results, verdict) <= ALPHA_SIDE + margin(ALPHA_SIDE, TRIALS_H0), verdict


def test_two_claims_on_the_same_rounds_hold_at_the_stated_confidence_as_a_family() -> None:
    """Speedup and parallelism both on their bounds, tested on the same rounds: the chance that
    either is decided either way is at most 1 - confidence (Bonferroni over the family)."""
    claims = [at_least("speedup", 1.0), at_least("parallelism", 1.0)]
    results = simulate(12, TRIALS_H0, 1.0, claims)
    wrong = sum(any(d.verdict is not Verdict.INCONCLUSIVE for d in m.decisions) for m in results) / TRIALS_H0
    family_alpha = 1 - SETTINGS.confidence
    assert wrong <= family_alpha + margin(family_alpha, TRIALS_H0)
    assert share(results, Verdict.HOLDS) <= ALPHA_SIDE + margin(ALPHA_SIDE, TRIALS_H0)


TRIALS_POWER = 400


@pytest.mark.parametrize("effect", [1.15, 1 / 1.15], ids=["holds", "fails"])
def test_a_15_percent_effect_is_decided_within_the_default_budget(effect: float) -> None:
    """A true median 15% past the bound (either way), 10% noise per call: decided, rightly, in at
    least 80% of claims within the default budget."""
    results = simulate(13, TRIALS_POWER, effect, [at_least("speedup", 1.0)])
    right = Verdict.HOLDS if effect > 1 else Verdict.FAILS
    assert share(results, right) >= 0.80
    assert share(results, Verdict.FAILS if effect > 1 else Verdict.HOLDS) == 0
    assert all(m.elapsed_s <= SETTINGS.budget_s * SETTINGS.extension + 3 * CALL_S for m in results)


def test_a_family_of_two_keeps_its_power() -> None:
    """Speedup and parallelism each 15% past their bounds, on the same rounds."""
    claims = [at_least("speedup", 1.0), at_least("parallelism", 1.0)]
    results = simulate(14, TRIALS_POWER, 1.15, claims, parallelism=1.15)
    assert share(results, Verdict.HOLDS) >= 0.80


def test_the_plan_spends_no_more_error_than_it_promises_up_to_max_rounds() -> None:
    """Without the time budget's cut, over all 60 looks: fair-coin walks (the count of values
    above a true median) cross the plan's upper boundary in at most (1 - confidence) / 2 of runs."""
    rng = random.Random(15)
    ranks = measure.sequential_ranks(SETTINGS.confidence, 1, SETTINGS.min_rounds, SETTINGS.max_rounds)
    trials, crossed = 20_000, 0
    for _ in range(trials):
        above = 0
        for n in range(1, SETTINGS.max_rounds + 1):
            above += rng.random() < 0.5
            if ranks[n] and above >= n + 1 - ranks[n]:
                crossed += 1
                break
    assert crossed / trials <= ALPHA_SIDE + margin(ALPHA_SIDE, trials)


def test_the_plans_first_look_agrees_with_scipys_binomial_tail() -> None:
    """The first look at which a claim can be decided spends the binomial tail scipy computes."""
    binom = pytest.importorskip("scipy.stats").binom
    for family in (1, 2, 3):
        ranks = measure.sequential_ranks(SETTINGS.confidence, family, SETTINGS.min_rounds,
                                         SETTINGS.max_rounds)
        n = next(n for n, k in enumerate(ranks) if k)
        need = n + 1 - ranks[n]
        assert binom.sf(need - 1, n, 0.5) <= ALPHA_SIDE / family
        assert ranks[n - 1] == 0 and n >= SETTINGS.min_rounds


def test_fixed_looks_share_the_error_of_a_family() -> None:
    """One planned look (MPI's fixed rounds): two claims get the 95% interval each, not 90%."""
    values = [1.0 + i / 100 for i in range(20)]
    single = measure.decide(values, at_least("speedup", 1.0), 0.9)
    pair = measure.decide(values, at_least("speedup", 1.0), 0.9, family=2)
    assert (single.low, pair.low) == (values[measure.median_ci_rank(20, 0.9) - 1],
                                      values[measure.median_ci_rank(20, 0.95) - 1])


def rates(trials: int) -> list[str]:
    """The figures quoted in the README and core/measure.py: ``python tests/test_sequential.py 1000``."""
    family = [at_least("speedup", 1.0), at_least("parallelism", 1.0)]
    cases = [("on the bound, >=", 1.0, 1.0, [at_least("speedup", 1.0)]),
             ("on the bound, <=", 1.0, 1.0, [at_most("speedup", 1.0)]),
             ("family of 2 on their bounds", 1.0, 1.0, family),
             ("15% above", 1.15, 1.0, [at_least("speedup", 1.0)]),
             ("15% below", 1 / 1.15, 1.0, [at_least("speedup", 1.0)]),
             ("family of 2, 15% above", 1.15, 1.15, family)]
    lines = []
    for seed, (name, speedup, parallelism, claims) in enumerate(cases, start=100):
        results = simulate(seed, trials, speedup, claims, parallelism)
        rounds = sorted(len(m.rounds) for m in results)
        holds, fails = share(results, Verdict.HOLDS), share(results, Verdict.FAILS)
        lines.append(f"{name}: holds {holds:.1%}, fails {fails:.1%}, "
                     f"median {rounds[trials // 2]} rounds, at most {rounds[-1]}")
    return lines


if __name__ == "__main__":
    import sys

    print("\n".join(rates(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)))
