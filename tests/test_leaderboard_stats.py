"""Leaderboard statistics: bootstrap intervals against closed forms, paired verdicts, collapse counts, and
the pairing of seeds across objectives that the paired comparison relies on."""

from __future__ import annotations

import math

import pytest
import torch

from flowzoo.bench.suite import suite_from_dict
from flowzoo.config import ConfigError
from flowzoo.leaderboard.stats import bootstrap_ci, collapsed, compare, median, paired_differences
from flowzoo.objectives import create_objective


def test_bootstrap_interval_of_two_points_is_their_range():
    # Resampling {0, 1} twice: the mean is 0 with probability 1/4, 1/2 w.p. 1/2, 1 w.p. 1/4, so the 2.5% and
    # 97.5% quantiles are exactly 0 and 1.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([2.5, 2.5, 2.5]) == (2.5, 2.5)
    assert bootstrap_ci([7.0]) == (7.0, 7.0)


def test_bootstrap_interval_matches_the_normal_interval_for_many_seeds():
    g = torch.Generator().manual_seed(0)
    values = (3.0 + 2.0 * torch.randn(400, generator=g, dtype=torch.float64)).tolist()
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = 1.959964 * sd / math.sqrt(len(values))  # the central limit theorem's 95% interval
    lo, hi = bootstrap_ci(values)
    assert lo == pytest.approx(mean - half, abs=0.1 * half) and hi == pytest.approx(mean + half, abs=0.1 * half)


def test_paired_comparison_resolves_a_consistent_shift_that_the_seed_spread_hides():
    reference = {0: 5.0, 1: 9.0, 2: 6.0, 3: 12.0, 4: 4.0}  # seeds differ a lot
    shifted = {seed: v + 0.3 + 0.01 * seed for seed, v in reference.items()}  # every seed 0.3 worse
    # Unpaired, the two means' intervals overlap widely ...
    lo_ref, hi_ref = bootstrap_ci(list(reference.values()))
    lo_new, hi_new = bootstrap_ci(list(shifted.values()))
    assert lo_new < hi_ref and lo_ref < hi_new
    # ... paired, the difference is resolved.
    c = compare(shifted, reference, lower_is_better=True)
    assert c.n == 5 and c.mean_difference == pytest.approx(0.32) and c.verdict == "worse"
    assert compare(reference, shifted, lower_is_better=True).verdict == "better"
    assert compare(shifted, reference, lower_is_better=False).verdict == "better"  # e.g. accuracy


def test_mixed_signs_and_too_few_seeds_are_not_resolved():
    reference = {0: 5.0, 1: 5.0, 2: 5.0, 3: 5.0, 4: 5.0}
    mixed = {0: 5.5, 1: 4.6, 2: 5.4, 3: 4.7, 4: 5.1}
    assert compare(mixed, reference).verdict == "not resolved at 5 seeds"
    two = {0: 9.0, 1: 9.0}
    assert compare(two, reference).verdict == "not resolved at 2 seeds"  # consistent, but only two seeds
    assert compare({7: 1.0}, reference) is None  # no shared seed
    assert paired_differences({0: 2.0, 3: 1.0, 9: 0.0}, {0: 1.0, 3: 3.0}) == {0: 1.0, 3: -2.0}


def test_collapse_count_and_median():
    assert collapsed([5.0, 60.0, 293.0, 52.0], threshold=52.57) == 2
    assert collapsed([0.9, 0.2], threshold=0.5, lower_is_better=False) == 1
    assert median([5.0, 293.0, 6.0]) == 6.0


def test_suite_reference_method_and_collapse_rule_are_validated():
    spec = {"data": "toy:8gaussians", "seeds": [0], "methods": [{"name": "a", "objective": "flow_matching"},
                                                                {"name": "b", "objective": "meanflow"}]}
    suite = suite_from_dict("s", {**spec, "collapse": {"reference": "real/swd", "multiple": 5}})
    assert suite.reference_method == "a" and suite.collapse.multiple == 5.0  # default: the first method
    with pytest.raises(ConfigError, match="reference_method 'c' is not one of the methods"):
        suite_from_dict("s", {**spec, "reference_method": "c"})
    with pytest.raises(ConfigError, match="collapse must be"):
        suite_from_dict("s", {**spec, "collapse": {"multiple": 2}})


def test_one_seed_draws_the_same_noise_for_every_objective():
    """What makes seeds paired: a step's generator (seeded from seed, rank and step) draws the noise first,
    so objectives that differ in their time draws still see identical noise, and identical times where
    they sample them the same way."""
    net = torch.nn.Identity()  # draw() does not call the network
    x = torch.zeros(16, 2)
    drawn = {name: create_objective(name, net, total_steps=100).draw(x, None, step=3, generator=torch.Generator().manual_seed(11))
             for name in ("flow_matching", "meanflow", "alphaflow", "shortcut")}
    noise = drawn["flow_matching"].noise
    for d in drawn.values():
        torch.testing.assert_close(d.noise, noise, rtol=0, atol=0)


def test_a_consistent_sign_at_three_seeds_is_not_enough_when_the_t_interval_includes_zero():
    from flowzoo.leaderboard.stats import student_t_ci

    lo, hi = student_t_ci([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)  # t_{0.975, 2} s / sqrt(n) with s = 1 (tables of Student's t)
    assert lo == pytest.approx(2 - half, abs=1e-5) and hi == pytest.approx(2 + half, abs=1e-5)
    reference = {0: 5.24, 1: 6.93, 2: 5.07}
    noisy = {0: 12.23, 1: 7.13, 2: 5.77}  # every seed worse, by 7.0, 0.2 and 0.7
    assert bootstrap_ci(list(paired_differences(noisy, reference).values()))[0] > 0  # the bootstrap alone would say "worse"
    assert compare(noisy, reference).verdict == "not resolved at 3 seeds"
