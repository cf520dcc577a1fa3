"""The bootstrap intervals of the tuned study: known inputs, coverage, determinism."""

from __future__ import annotations

import random
import statistics

import pytest

from sgpo.experiments.stats import BOOTSTRAP_RESAMPLES, bootstrap_diff, bootstrap_mean


def test_mean_interval_brackets_the_mean_and_is_deterministic() -> None:
    vals = [0.25, 0.27, 0.29, 0.26, 0.30]
    a, b = bootstrap_mean(vals), bootstrap_mean(vals)
    assert a == b  # seeded
    assert a.estimate == pytest.approx(statistics.fmean(vals))
    assert min(vals) <= a.low < a.estimate < a.high <= max(vals)
    assert a.resamples == BOOTSTRAP_RESAMPLES and a.level == 0.95 and a.n == (5,)
    assert bootstrap_mean(vals, seed=1).low == pytest.approx(a.low, abs=0.005)  # another seed: close
    many = [0.2 + 0.013 * i for i in range(12)]
    assert bootstrap_mean(many, resamples=500, seed=1) != bootstrap_mean(many, resamples=500, seed=2)


def test_constant_values_give_a_point_interval_and_one_value_none() -> None:
    c = bootstrap_mean([0.3, 0.3, 0.3])
    assert c.low == pytest.approx(0.3) and c.high == pytest.approx(0.3)
    one = bootstrap_mean([0.3])
    assert one.estimate == 0.3 and one.low is None and one.high is None and not one.excludes_zero


def test_difference_that_excludes_zero_and_one_that_does_not() -> None:
    sgpo = [0.285, 0.290, 0.280, 0.288, 0.283]
    grpo = [0.229, 0.240, 0.210, 0.235, 0.231]
    d = bootstrap_diff(sgpo, grpo)
    assert d.estimate == pytest.approx(statistics.fmean(sgpo) - statistics.fmean(grpo))
    assert d.excludes_zero and d.low > 0 and d.n == (5, 5)
    noisy = [0.27, 0.30, 0.22, 0.25, 0.29]
    near = bootstrap_diff(noisy, [0.26, 0.24, 0.28, 0.23, 0.27])
    assert near.low < 0 < near.high and not near.excludes_zero
    assert bootstrap_diff(grpo, sgpo).high < 0  # the other way round: below zero, excludes it too
    assert bootstrap_diff(sgpo, grpo) == d  # deterministic
    assert bootstrap_diff(sgpo, [0.2]).low is None  # a single seed on one side: no interval


def test_coverage_of_the_mean_interval_is_near_nominal() -> None:
    """200 samples of 20 normal values: the 95% interval covers the true mean in roughly 95% of them (the
    percentile bootstrap under-covers a little at small n; 85-99% is the sanity band)."""
    rng = random.Random(7)
    covered = 0
    trials = 200
    for t in range(trials):
        vals = [rng.gauss(0.5, 0.1) for _ in range(20)]
        ci = bootstrap_mean(vals, resamples=1000, seed=t)
        covered += ci.low <= 0.5 <= ci.high
    assert 0.85 * trials <= covered <= 0.99 * trials
