"""How often the leaderboard's 95% intervals and verdicts hold their label, simulated through its own functions.

Prints, for n = 3, 5 and 10 seeds:
  * coverage of the true mean by the leaderboard's interval (Student-t, flowzoo.leaderboard.stats.t_interval)
    and by the percentile bootstrap it replaced, on normal seeds (a digits-like FD of 5.3 +- 0.6) and on a
    skewed spread shaped like the digits FD with a collapse (each seed collapses to FD ~290 with
    probability 0.2, as one seed of five did for MeanFlow's old weight);
  * the chance that a 24-cell table (8 methods x 3 NFE against one reference) with no true difference shows
    any "better"/"worse": per-cell t-tests at 5% against Holm-Bonferroni (flowzoo.leaderboard.stats.compare_all).

    .venv/bin/python benchmarks/interval_coverage.py [--trials 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from flowzoo.leaderboard.stats import compare_all, paired_differences, paired_t_pvalue, t_interval


def normal_seeds(n: int, rng) -> tuple[np.ndarray, float]:
    return 5.3 + 0.6 * rng.standard_normal(n), 5.3


def collapsing_seeds(n: int, rng, p: float = 0.2) -> tuple[np.ndarray, float]:
    collapsed = rng.random(n) < p
    values = np.where(collapsed, 290 + 20 * rng.standard_normal(n), 5.3 + 0.6 * rng.standard_normal(n))
    return values, (1 - p) * 5.3 + p * 290


def percentile_bootstrap(values: np.ndarray, rng, resamples: int = 2000) -> tuple[float, float]:
    means = values[rng.integers(0, values.size, size=(resamples, values.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def coverage(draw, n: int, trials: int, rng) -> tuple[float, float]:
    t_hits = boot_hits = 0
    for _ in range(trials):
        values, true_mean = draw(n, rng)
        lo, hi = t_interval(values.tolist())
        t_hits += lo <= true_mean <= hi
        lo, hi = percentile_bootstrap(values, rng)
        boot_hits += lo <= true_mean <= hi
    return t_hits / trials, boot_hits / trials


def false_verdict_rates(tables: int, rng, seeds: int = 5) -> tuple[float, float]:
    holm = per_cell = 0
    for _ in range(tables):
        seed_effect = 2.0 * rng.standard_normal(seeds)  # shared by every method: seeds are paired
        reference = {nfe: dict(enumerate(seed_effect + rng.standard_normal(seeds))) for nfe in (1, 2, 4)}
        cells = {(m, nfe): (dict(enumerate(seed_effect + rng.standard_normal(seeds))), reference[nfe])
                 for m in range(8) for nfe in (1, 2, 4)}
        holm += any(c.verdict in ("better", "worse") for c in compare_all(cells).values())
        per_cell += any(paired_t_pvalue(list(paired_differences(v, r).values())) < 0.05 for v, r in cells.values())
    return holm / tables, per_cell / tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"coverage of the true mean by a nominal 95% interval ({args.trials} trials each)")
    print("| seeds | normal: t | normal: bootstrap | collapse p=0.2: t | collapse p=0.2: bootstrap |")
    print("|---|---|---|---|---|")
    for n in (3, 5, 10):
        normal = coverage(normal_seeds, n, args.trials, rng)
        skewed = coverage(collapsing_seeds, n, args.trials, rng)
        print(f"| {n} | {normal[0]:.1%} | {normal[1]:.1%} | {skewed[0]:.1%} | {skewed[1]:.1%} |")
    holm, per_cell = false_verdict_rates(max(200, args.trials // 2), rng)
    print(f"\n24 null comparisons in one table, 5 paired seeds: P(any false verdict) = {holm:.1%} with "
          f"Holm-Bonferroni, {per_cell:.1%} testing each cell at 5%")


if __name__ == "__main__":
    main()
