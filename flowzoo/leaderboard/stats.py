"""Statistics that let a table tell methods apart: bootstrap intervals, paired differences, verdicts.

Seeds are paired across methods: the same seed gives the same initial weights (for the same backbone),
the same data order and, step by step, the same generator, so the noise of every step is identical
across objectives and the (t, r) draws are identical wherever two objectives draw them the same way
(flowzoo.train.loop seeds each step's generator from (seed, rank, step); UnifiedObjective.draw draws the
noise first). A method's paired difference to the suite's reference method is therefore computed seed by
seed, which removes the between-seed variance both methods share.

Intervals are percentile bootstraps of the mean (Efron & Tibshirani 1993, ch. 13), with a fixed
resampling seed so a rebuilt page prints the same numbers. At a handful of seeds a percentile
bootstrap is too narrow: it can never include 0 when every paired difference has the same sign, even at
3 seeds, where a sign test gives p = 0.25. So a verdict needs two things: the bootstrap interval of the
paired mean difference excludes 0, and so does the Student-t interval of that mean (n - 1 degrees of
freedom; the paired t-test at 5%), with at least MIN_SEEDS paired seeds. Otherwise the verdict is
"not resolved at n seeds".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 10_000
MIN_SEEDS = 3  # below this no verdict: two or fewer differences cannot show a consistent sign


def bootstrap_ci(values: list[float], level: float = LEVEL, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values`."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to bootstrap")
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(lo), float(hi)


def student_t_ci(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """The t interval of the mean: mean +- t_{n-1} s / sqrt(n) (the paired t-test's acceptance region)."""
    from scipy.stats import t as student_t

    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return (-np.inf, np.inf)
    half = student_t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / np.sqrt(data.size)
    return float(data.mean() - half), float(data.mean() + half)


def paired_differences(values: dict[int, float], reference: dict[int, float]) -> dict[int, float]:
    """value - reference on the seeds both have, by seed."""
    return {seed: values[seed] - reference[seed] for seed in sorted(values) if seed in reference}


@dataclass(frozen=True)
class Comparison:
    """A method against the reference method on paired seeds."""

    n: int
    mean_difference: float
    interval: tuple[float, float]
    verdict: str  # "better" | "worse" | "not resolved at n seeds"


def compare(values: dict[int, float], reference: dict[int, float], lower_is_better: bool = True) -> Comparison | None:
    """The paired comparison of `values` to `reference` (None when they share no seed)."""
    diffs = paired_differences(values, reference)
    if not diffs:
        return None
    d = list(diffs.values())
    lo, hi = bootstrap_ci(d)
    t_lo, t_hi = student_t_ci(d)
    mean = float(np.mean(d))
    if len(d) >= MIN_SEEDS and ((lo > 0 and t_lo > 0) or (hi < 0 and t_hi < 0)):
        smaller = hi < 0
        verdict = "better" if smaller == lower_is_better else "worse"
    else:
        verdict = f"not resolved at {len(d)} seeds"
    return Comparison(len(d), mean, (lo, hi), verdict)


def median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def collapsed(values: list[float], threshold: float, lower_is_better: bool = True) -> int:
    """How many runs are worse than `threshold` (e.g. worse than the class-mean images' FD)."""
    return sum(1 for v in values if (v > threshold if lower_is_better else v < threshold))
