"""The gate's statistics, all from scipy.stats (imported when first used): the two-sample test of a
run against a saved one, the paired test of ``continuous`` sessions, the adjustment of a whole
run's p-values as one family, and the smallest change each series could have shown.

A run gates dozens of series. Tested one by one at alpha, an unchanged run would raise a false
alarm in most runs; judged together with Benjamini-Hochberg (``scipy.stats.false_discovery_control``),
the chance of any false alarm on an unchanged run (every null hypothesis true) stays at alpha, and
real changes among many unchanged series keep most of their power.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def mann_whitney_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test that ``x`` and ``y`` come from one
    distribution (scipy picks the exact or the tie-corrected normal distribution); 1 without data
    or when every sample is equal."""
    if not x or not y or len({*x, *y}) == 1:
        return 1.0
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


def adjusted(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values of one family (a series fails when its own is < alpha)."""
    if not p_values:
        return []
    from scipy.stats import false_discovery_control

    return [float(q) for q in false_discovery_control(list(p_values), method="bh")]


def _log_spread(samples: Sequence[float]) -> float:
    """Robust standard deviation of the logs (scaled median absolute deviation)."""
    from scipy.stats import median_abs_deviation

    logs = [math.log(s) for s in samples if s > 0]
    return float(median_abs_deviation(logs, scale="normal")) if len(logs) > 1 else math.inf


def detectable_two_sample(x: Sequence[float], y: Sequence[float], alpha: float, family: int) -> float:
    """About the smallest relative change of the median the two-sample test finds at this noise,
    with ``family`` series judged together (Bonferroni's level, the strictest step of BH)."""
    from scipy.stats import norm

    se = math.hypot(_log_spread(x) / math.sqrt(max(len(x), 1)), _log_spread(y) / math.sqrt(max(len(y), 1)))
    z = float(norm.ppf(1 - alpha / (2 * max(family, 1))))
    return math.expm1(z * se) if math.isfinite(se) else math.inf


@dataclass(frozen=True)
class Paired:
    """The paired test of per-session-pair log ratios (head over base): the change is the geometric
    mean ratio less 1, with its interval at 1 - alpha."""

    change: float
    low: float
    high: float
    p_value: float
    pairs: int
    se: float  # standard error of the mean log ratio

    def detectable(self, alpha: float, family: int, min_effect: float) -> float:
        """About the smallest change flagged at this noise, over ``family`` series."""
        if self.pairs < 2 or not math.isfinite(self.se):
            return math.inf
        from scipy.stats import t

        crit = float(t.ppf(1 - alpha / (2 * max(family, 1)), self.pairs - 1))
        return max(min_effect, math.expm1(crit * self.se))


def paired(log_ratios: Sequence[float], alpha: float) -> Paired:
    """One-sample t-test that the mean log ratio is 0, and its interval at 1 - alpha (Student's t
    from scipy.stats, as ``ttest_1samp`` computes it, without its per-call overhead: a run judges
    hundreds of series). With fewer than two pairs, or no spread at all, nothing can be said
    unless every ratio moved."""
    n = len(log_ratios)
    if n == 0:
        return Paired(math.nan, math.nan, math.nan, 1.0, 0, math.inf)
    mean = sum(log_ratios) / n
    if n < 2 or len(set(log_ratios)) == 1:
        p = 1.0 if n < 2 or mean == 0 else 0.0
        return Paired(math.expm1(mean), math.expm1(mean), math.expm1(mean), p, n, math.inf if n < 2 else 0.0)
    from scipy.stats import t

    se = math.sqrt(sum((r - mean) ** 2 for r in log_ratios) / (n - 1) / n)
    p = float(2 * t.sf(abs(mean) / se, n - 1))
    half = float(t.ppf(1 - alpha / 2, n - 1)) * se
    return Paired(math.expm1(mean), math.expm1(mean - half), math.expm1(mean + half), p, n, se)
