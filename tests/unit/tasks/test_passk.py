"""avg@k and the unbiased pass@k estimator (Chen et al. 2021) used by `sgpo eval`."""

from __future__ import annotations

from fractions import Fraction
from itertools import pairwise
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgpo.core.errors import InvalidInputError
from sgpo.tasks.passk import ProblemCounts, compute_avg_at_k, compute_benchmark_metrics, compute_pass_at_k


@st.composite
def samples(draw: st.DrawFn, max_n: int = 200) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n))


@given(samples())
def test_pass_at_1_is_the_mean_accuracy(nc: tuple[int, int]) -> None:
    n, c = nc
    assert compute_pass_at_k(n, c, 1) == pytest.approx(compute_avg_at_k(n, c), abs=1e-12)


@given(samples())
def test_monotone_in_k_and_a_probability(nc: tuple[int, int]) -> None:
    n, c = nc
    values = [compute_pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a <= b + 1e-12 for a, b in pairwise(values))


@given(st.integers(1, 500), st.data())
def test_no_correct_is_zero_all_correct_is_one(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, n))
    assert compute_pass_at_k(n, 0, k) == 0.0
    assert compute_pass_at_k(n, n, k) == 1.0


@given(samples(max_n=60), st.data())
def test_matches_the_binomial_formula(nc: tuple[int, int], data: st.DataObject) -> None:
    n, c = nc
    k = data.draw(st.integers(1, n))
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert compute_pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


def test_large_n_stays_finite() -> None:
    # C(10000, 5000) overflows a float; the product form never builds it
    assert compute_pass_at_k(10_000, 1, 5_000) == pytest.approx(0.5)
    assert 0.0 < compute_pass_at_k(10_000, 3, 10) < 0.01


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_bad_counts_name_the_field(n: int, c: int, k: int) -> None:
    with pytest.raises(InvalidInputError):
        compute_pass_at_k(n, c, k)


@given(st.lists(st.integers(0, 8), min_size=1, max_size=30))
def test_benchmark_pass_at_1_equals_avg(corrects: list[int]) -> None:
    problems = [ProblemCounts(8, c) for c in corrects]
    m = compute_benchmark_metrics(problems, [1, 4, 8])
    assert m["pass@1"] == pytest.approx(m["avg@8"])
    assert m["pass@1"] <= m["pass@4"] <= m["pass@8"]
    assert m["problems"] == len(problems) and m["samples"] == 8 * len(problems)


def test_unscorable_is_reported_not_hidden() -> None:
    m = compute_benchmark_metrics([ProblemCounts(4, 1, unscorable=2), ProblemCounts(4, 0)], [1, 4])
    assert m["avg@4"] == pytest.approx(1 / 8)
    assert m["unscorable"] == 2 and m["unscorable_rate"] == pytest.approx(2 / 8)
    with pytest.raises(InvalidInputError, match="unscorable"):
        compute_benchmark_metrics([ProblemCounts(4, 3, unscorable=2)], [1])
    with pytest.raises(InvalidInputError, match="same n"):
        compute_benchmark_metrics([ProblemCounts(4, 1), ProblemCounts(2, 1)], [1])
