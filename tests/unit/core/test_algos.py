"""The algorithm registry (`sgpo.core.algos`): what each algorithm sends to the judge, and how it scores."""

from __future__ import annotations

from typing import get_args

import pytest

from sgpo.core import (
    ALGORITHMS,
    Algo,
    AlgoConfig,
    StepJudgement,
    VerdictStatus,
    compute_colored_reward,
    compute_group_advantages,
    get_algorithm,
    judgement_rts,
)

MIXED: list[VerdictStatus] = ["correct", "wrong", "wrong", "unscorable"]
ALL_WRONG: list[VerdictStatus] = ["wrong", "wrong", "wrong"]


def test_every_algo_name_has_one_class() -> None:
    assert set(ALGORITHMS) == set(get_args(Algo))
    for name in get_args(Algo):
        assert get_algorithm(AlgoConfig(algo=name)).name == name


@pytest.mark.parametrize(
    ("algo", "scope", "statuses", "expected"),
    [
        ("sgpo", "all_negative", ALL_WRONG, [True, True, True]),
        ("sgpo", "all_negative", MIXED, [False] * 4),
        ("sgpo", "all_incorrect", MIXED, [False, True, True, False]),
        ("grpo", "all_negative", ALL_WRONG, [False] * 3),
        ("drgrpo", "all_negative", ALL_WRONG, [False] * 3),
        ("dapo", "all_negative", ALL_WRONG, [False] * 3),
    ],
)
def test_which_completions_need_a_judgement(
    algo: Algo, scope: str, statuses: list[VerdictStatus], expected: list[bool]
) -> None:
    algorithm = get_algorithm(AlgoConfig(algo=algo, color_scope=scope))  # type: ignore[arg-type]
    assert algorithm.judge_mask(statuses) == expected
    # Recording judges every wrong answer, whatever the algorithm, so a replay can use any of them.
    assert algorithm.judge_mask(statuses, record=True) == [s == "wrong" for s in statuses]


def test_dr_grpo_never_divides_by_the_std() -> None:
    statuses: list[VerdictStatus] = ["correct", "wrong", "wrong", "wrong"]
    dr = get_algorithm(AlgoConfig(algo="drgrpo")).score(statuses)
    assert dr.advantages == pytest.approx((0.75, -0.25, -0.25, -0.25))
    # std_normalize = false keeps working as before: GRPO gives Dr.GRPO's advantages.
    assert get_algorithm(AlgoConfig(algo="grpo", std_normalize=False)).score(statuses) == dr
    grpo = get_algorithm(AlgoConfig(algo="grpo")).score(statuses)
    assert grpo.advantages == pytest.approx(tuple(compute_group_advantages([1.0, 0.0, 0.0, 0.0])))


def test_dapo_drops_groups_of_accuracy_zero_or_one_and_says_why() -> None:
    dapo = get_algorithm(AlgoConfig(algo="dapo"))
    for statuses in (ALL_WRONG, ["correct", "correct"]):
        score = dapo.score(statuses)
        assert not score.keep and score.drop_reason == "filtered"
    assert dapo.score(MIXED).keep
    # The filter follows dynamic_sampling where it is set, for any algorithm.
    assert get_algorithm(AlgoConfig(algo="dapo", dynamic_sampling=False)).score(ALL_WRONG).keep
    assert not get_algorithm(AlgoConfig(algo="grpo", dynamic_sampling=True)).score(ALL_WRONG).keep
    assert get_algorithm(AlgoConfig(algo="grpo")).score(ALL_WRONG).keep


def test_sgpo_scores_rts_from_step_lengths_in_the_run_unit() -> None:
    # Four steps of 10, 30, 20, 40 tokens, the third wrong: rts 0.4 in tokens, 0.5 in steps.
    slip = StepJudgement("ok", ("a", "b", "c", "d"), 2, (10, 30, 20, 40))
    empty = StepJudgement("ok", (), 0, reason="empty response")  # nothing before the first error
    none_found = StepJudgement("ok", ("a", "b"), -1, (3, 1))  # the prefix up to the last step
    judgements = [slip, empty, none_found]
    for unit, rts in (("tokens", [0.4, 0.0, 0.75]), ("steps", [0.5, 0.0, 0.5])):
        cfg = AlgoConfig(rts_unit=unit)  # type: ignore[arg-type]
        assert [judgement_rts(j, cfg.rts_unit) for j in judgements] == pytest.approx(rts)
        score = get_algorithm(cfg).score(ALL_WRONG, judgements)
        assert score.colored and not score.uncolorable and score.kind == "all_negative"
        assert score.rewards == pytest.approx(tuple(compute_colored_reward(r, cfg.coloring) for r in rts))


def test_unknown_algorithm_is_a_clear_error() -> None:
    cfg = AlgoConfig().model_copy(update={"algo": "ppo"})  # bypasses validation, as a stale record could
    with pytest.raises(ValueError, match=r"algo: must be one of \['dapo', 'drgrpo', 'grpo', 'sgpo'\]"):
        get_algorithm(cfg)
