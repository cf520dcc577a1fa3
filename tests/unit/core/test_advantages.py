"""Properties of group advantages and SGPO coloring (hypothesis), scored through `sgpo.core.algos`."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sgpo.core import (
    AlgoConfig,
    ColoringParams,
    StepJudgement,
    classify_group,
    compute_colored_reward,
    compute_group_advantages,
    compute_rts,
    get_algorithm,
    judgement_rts,
    keep_for_dynamic_sampling,
)

group_sizes = st.integers(min_value=2, max_value=32)
rts_values = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
betas = st.floats(min_value=0.01, max_value=30.0)
gammas = st.floats(min_value=0.0, max_value=1.0)
r_maxes = st.floats(min_value=0.01, max_value=0.99)
# rts as a share of integer step lengths: (tokens before the first error, tokens from it on)
prefixes = st.tuples(st.integers(0, 1000), st.integers(1, 1000))


def judged(head: int, rest: int) -> StepJudgement:
    """A judgement whose rts in tokens is head / (head + rest): two steps, the second one wrong."""
    return StepJudgement("ok", ("right", "wrong"), 1, (head, rest))


@given(group_sizes)
def test_grpo_all_negative_group_gives_zero_advantages(g: int) -> None:
    scores = get_algorithm(AlgoConfig(algo="grpo")).score(["wrong"] * g, [judged(1, 2)] * g)
    assert scores.kind == "all_negative"
    assert scores.advantages == (0.0,) * g
    assert not scores.colored


@given(st.lists(prefixes, min_size=2, max_size=16, unique=True))
def test_sgpo_all_negative_group_is_ordered_like_rts(parts: list[tuple[int, int]]) -> None:
    cfg = AlgoConfig()
    judgements = [judged(*p) for p in parts]
    rts = [judgement_rts(j, "tokens") for j in judgements]
    colored = [compute_colored_reward(r, cfg.coloring) for r in rts]
    assume(len(set(colored)) == len(colored))  # equal shares, or sigmoid merging values ~1e-17 apart
    scores = get_algorithm(cfg).score(["wrong"] * len(rts), judgements)
    assert scores.colored and scores.kind == "all_negative"
    assert scores.rewards == tuple(colored)
    assert abs(sum(scores.advantages)) < 1e-6
    assert any(a != 0.0 for a in scores.advantages)
    by_rts = [a for _, a in sorted(zip(rts, scores.advantages, strict=True))]
    assert by_rts == sorted(by_rts)


@given(rts_values, betas, gammas, r_maxes)
def test_colored_reward_in_open_interval_below_one(
    rts: float, beta: float, gamma: float, r_max: float
) -> None:
    r = compute_colored_reward(rts, ColoringParams(beta, gamma, r_max))
    assert 0.0 < r < r_max < 1.0


@given(rts_values, rts_values)
def test_colored_reward_is_increasing_in_rts(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert compute_colored_reward(lo) <= compute_colored_reward(hi)


@given(st.integers(1, 7), st.integers(1, 7))
def test_all_negative_scope_leaves_mixed_groups_untouched(n_correct: int, n_wrong: int) -> None:
    statuses = ["correct"] * n_correct + ["wrong"] * n_wrong
    judgements = [None] * n_correct + [judged(i, 10) for i in range(n_wrong)]
    sgpo = get_algorithm(AlgoConfig(algo="sgpo", color_scope="all_negative")).score(statuses, judgements)
    grpo = get_algorithm(AlgoConfig(algo="grpo")).score(statuses)
    assert sgpo.kind == "mixed" and not sgpo.colored
    assert sgpo.rewards == grpo.rewards == (1.0,) * n_correct + (0.0,) * n_wrong
    assert sgpo.advantages == grpo.advantages


def test_all_incorrect_scope_colors_wrong_answers_of_mixed_groups() -> None:
    cfg = AlgoConfig(color_scope="all_incorrect")
    scores = get_algorithm(cfg).score(["correct", "wrong", "wrong"], [None, judged(1, 9), judged(9, 1)])
    low, high = (compute_colored_reward(r, cfg.coloring) for r in (0.1, 0.9))
    assert scores.colored and scores.rewards == pytest.approx((1.0, low, high))
    assert scores.advantages[0] > scores.advantages[2] > scores.advantages[1]


@given(st.lists(prefixes, min_size=2, max_size=12), r_maxes, r_maxes)
def test_r_max_scale_does_not_change_std_normalized_advantages(
    parts: list[tuple[int, int]], r1: float, r2: float
) -> None:
    judgements = [judged(*p) for p in parts]

    def advantages(r_max: float) -> tuple[float, ...]:
        # eps is what breaks exact scale invariance; make it negligible to test the invariance itself.
        algorithm = get_algorithm(AlgoConfig(r_max=r_max, adv_eps=1e-15))
        return algorithm.score(["wrong"] * len(parts), judgements).advantages

    rts = [judgement_rts(j, "tokens") for j in judgements]
    assume(max(rts) - min(rts) > 0.05)
    for a, b in zip(advantages(r1), advantages(r2), strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)


def test_judge_failure_leaves_group_uncolored_and_flagged() -> None:
    failed = StepJudgement("failed", ("a", "b"), reason="timeout")
    for missing in (None, failed):
        scores = get_algorithm(AlgoConfig()).score(
            ["wrong"] * 4, [judged(1, 9), missing, judged(3, 7), judged(2, 8)]
        )
        assert scores.uncolorable and not scores.colored and scores.keep
        assert scores.rewards == (0.0,) * 4 and scores.advantages == (0.0,) * 4


def test_unscorable_completions_are_masked_not_zero() -> None:
    scores = get_algorithm(AlgoConfig(algo="grpo")).score(["correct", "unscorable", "wrong", "wrong"])
    assert scores.advantages[1] == 0.0
    kept = [scores.advantages[i] for i in (0, 2, 3)]
    assert kept == pytest.approx(compute_group_advantages([1.0, 0.0, 0.0]))
    assert classify_group(["unscorable", "unscorable", "wrong"]) == "unscorable"


def test_dr_grpo_skips_std_normalization() -> None:
    assert compute_group_advantages([1.0, 0.0, 0.0, 0.0], std_normalize=False) == [0.75, -0.25, -0.25, -0.25]
    std = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)
    assert compute_group_advantages([1.0, 0.0, 0.0, 0.0])[0] == pytest.approx(0.75 / std, rel=1e-5)


def test_dynamic_sampling_keeps_only_mixed_accuracy() -> None:
    assert keep_for_dynamic_sampling(["correct", "wrong"])
    assert not keep_for_dynamic_sampling(["wrong", "wrong"])
    assert not keep_for_dynamic_sampling(["correct", "correct"])


@pytest.mark.parametrize(
    ("lengths", "first_error", "expected"),
    [([10, 20, 30, 40], 2, 0.3), ([10, 20, 30, 40], 0, 0.0), ([10, 20, 30, 40], -1, 0.6), ([1, 1], -1, 0.5)],
)
def test_rts_is_the_correct_prefix_share(lengths: list[int], first_error: int, expected: float) -> None:
    assert compute_rts(lengths, first_error) == pytest.approx(expected)
