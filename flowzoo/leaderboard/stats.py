"""Statistics that let a table tell methods apart: t intervals, paired differences, Holm-controlled verdicts.

Seeds are paired across methods: the same seed gives the same initial weights (for the same backbone),
the same data order and, step by step, the same generator, so the noise of every step is identical
across objectives and the (t, r) draws are identical wherever two objectives draw them the same way
(flowzoo.train.loop seeds each step's generator from (seed, rank, step); UnifiedObjective.draw draws the
noise first). A method's paired difference to the suite's reference method is therefore computed seed by
seed, which removes the between-seed variance both methods share.

Why Student-t and not the bootstrap. At the seed counts a leaderboard has (3 to 10), the percentile
bootstrap of the mean is too narrow: simulated on normal seeds it covers the true mean 76% of the time
at n = 3, 84% at n = 5 and 90% at n = 10 for a nominal 95% (it rescales by sqrt((n-1)/n) and uses normal
instead of t quantiles). The t interval mean +- t_{n-1} s / sqrt(n) is exact for normal seeds at every n
(95.2%, 95.0%, 95.3%; tests/test_leaderboard_stats.py simulates it through these functions). No small-n
interval of the mean survives a collapsing seed: when each seed collapses (FD ~290) with probability
0.2, the t interval covers 47% at n = 3, 66% at n = 5 and 89% at n = 10 (the bootstrap the same or
less), which is why tables also give the median and the collapse count.
(`benchmarks/interval_coverage.py`, 2,000 trials each.)

Why Holm. A table compares every method x NFE cell with one reference; testing each cell at 5% gives a
table of 24 null cells (5 paired seeds, one shared reference) at least one false verdict 64% of the time.
Holm-Bonferroni's step-down (Holm 1979) keeps the chance of *any* false "better"/"worse" in a table at
most 5% under any dependence between the cells (5.1% simulated, within its 0.7-point error), and is
uniformly more powerful than Bonferroni. We prefer a family-wise guarantee to Benjamini-Hochberg's
false-discovery rate because a leaderboard's readers take each single verdict as a claim, not as a list
of candidates to follow up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Hashable

import numpy as np

LEVEL = 0.95
FAMILY_ALPHA = 1 - LEVEL  # the chance of any false verdict in one table
MIN_SEEDS = 3  # below this no verdict: two or fewer differences cannot show a consistent sign
MULTIPLICITY = "Holm-Bonferroni"
INTERVAL = "Student-t"
MAX_SEEDS_NEEDED = 1000  # past this "seeds needed" is reported as more than it


@lru_cache(maxsize=4096)
def _t_quantile(p: float, dof: int) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(p, dof))


@lru_cache(maxsize=256)
def _seed_counts_and_bars(tests: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """n = MIN_SEEDS .. MAX_SEEDS_NEEDED and t_{n-1, 1 - alpha/(2 tests)} / sqrt(n) (the bar per unit sd)."""
    from scipy.stats import t as student_t

    n = np.arange(max(MIN_SEEDS, 2), MAX_SEEDS_NEEDED + 1)
    return n, student_t.ppf(1 - alpha / (2 * max(tests, 1)), n - 1) / np.sqrt(n)


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """The Student-t interval of the mean: mean +- t_{n-1, (1+level)/2} s / sqrt(n).

    One value has no interval (returned as (nan, nan)); identical values give a zero-width interval."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values for an interval")
    if data.size < 2 or not np.all(np.isfinite(data)):
        return (math.nan, math.nan)
    half = _t_quantile(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size)
    return float(data.mean() - half), float(data.mean() + half)


def paired_t_pvalue(differences: list[float]) -> float:
    """Two-sided p-value of the paired t-test that the mean difference is 0 (1.0 below two values)."""
    from scipy.stats import t as student_t

    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2 or not np.all(np.isfinite(d)):
        return 1.0
    sd = d.std(ddof=1)
    if sd == 0:  # every seed moved by exactly the same amount
        return 0.0 if d.mean() != 0 else 1.0
    statistic = d.mean() / (sd / math.sqrt(d.size))
    return float(2 * student_t.sf(abs(statistic), d.size - 1))


def holm_rejections(p_values: dict[Hashable, float], alpha: float = FAMILY_ALPHA) -> dict[Hashable, bool]:
    """Holm's step-down: sort the m p-values, reject while p_(k) <= alpha / (m - k + 1), stop at the first
    that is not; controls the family-wise error rate at alpha under any dependence."""
    order = sorted(p_values, key=lambda k: p_values[k])
    m = len(order)
    rejected = {key: False for key in order}
    for k, key in enumerate(order):
        if p_values[key] > alpha / (m - k):
            break
        rejected[key] = True
    return rejected


def resolvable_difference(differences: list[float], tests: int, alpha: float = FAMILY_ALPHA) -> float:
    """The smallest |mean paired difference| these seeds could call resolved at this spread: the paired
    t-test's critical value at Holm's strictest level alpha / m, t_{n-1, 1 - alpha/(2m)} s_d / sqrt(n).
    (Holm's later steps are more lenient, so a cell can resolve below it; never above it.)"""
    d = np.asarray(differences, dtype=np.float64)
    if d.size < 2:
        return math.inf
    return _t_quantile(1 - alpha / (2 * max(tests, 1)), d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)


def seeds_needed(mean_difference: float, sd: float, tests: int, alpha: float = FAMILY_ALPHA) -> int | None:
    """How many paired seeds would resolve `mean_difference` at the spread `sd` (the same test as
    resolvable_difference), assuming both stay as observed; None when the difference is 0 or not finite."""
    if not math.isfinite(mean_difference) or not math.isfinite(sd) or mean_difference == 0:
        return None
    n, bar_per_sd = _seed_counts_and_bars(max(tests, 1), alpha)
    enough = np.nonzero(bar_per_sd * sd < abs(mean_difference))[0]
    return int(n[enough[0]]) if enough.size else MAX_SEEDS_NEEDED + 1


def paired_differences(values: dict[int, float], reference: dict[int, float]) -> dict[int, float]:
    """value - reference on the seeds both have, by seed."""
    return {seed: values[seed] - reference[seed] for seed in sorted(values) if seed in reference}


@dataclass(frozen=True)
class Comparison:
    """A method against the reference method on paired seeds (one cell of a comparison table)."""

    n: int
    mean_difference: float
    interval: tuple[float, float]  # Student-t interval of the mean paired difference (unadjusted)
    p_value: float  # the paired t-test's, before Holm's adjustment
    verdict: str  # "better" | "worse" | "not resolved at n seeds"
    resolvable: float  # smallest |difference| these seeds could resolve at the observed spread
    seeds_needed: int | None  # seeds that would resolve the observed mean difference at this spread
    tests: int  # the number of comparisons in the table (Holm's m)


def compare_all(cells: dict[Hashable, tuple[dict[int, float], dict[int, float]]], lower_is_better: bool = True,
                alpha: float = FAMILY_ALPHA) -> dict[Hashable, Comparison]:
    """Every cell's paired comparison {key: (values by seed, reference values by seed)}, the verdicts
    Holm-controlled across the cells that have at least MIN_SEEDS paired seeds. Cells sharing no seed are
    left out of the result."""
    diffs = {key: list(paired_differences(v, ref).values()) for key, (v, ref) in cells.items()}
    diffs = {key: d for key, d in diffs.items() if d}
    testable = {key: paired_t_pvalue(d) for key, d in diffs.items() if len(d) >= MIN_SEEDS}
    rejected = holm_rejections(testable, alpha) if testable else {}
    m = len(testable)
    out = {}
    for key, d in diffs.items():
        mean = float(np.mean(d))
        if rejected.get(key):
            verdict = "better" if (mean < 0) == lower_is_better else "worse"
        else:
            verdict = f"not resolved at {len(d)} seeds"
        sd = float(np.std(d, ddof=1)) if len(d) > 1 else math.inf
        out[key] = Comparison(len(d), mean, t_interval(d), testable.get(key, 1.0), verdict,
                              resolvable_difference(d, m or 1, alpha), seeds_needed(mean, sd, m or 1, alpha), m)
    return out


def compare(values: dict[int, float], reference: dict[int, float], lower_is_better: bool = True) -> Comparison | None:
    """One paired comparison on its own (a family of one test); None when they share no seed."""
    return compare_all({0: (values, reference)}, lower_is_better).get(0)


def median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def collapsed(values: list[float], threshold: float, lower_is_better: bool = True) -> int:
    """How many runs are worse than `threshold` (e.g. worse than the class-mean images' FD); a non-finite
    value counts as collapsed."""
    return sum(1 for v in values if not math.isfinite(v) or (v > threshold if lower_is_better else v < threshold))
