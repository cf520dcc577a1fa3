"""Bad input to the core: a clear error naming the field, never a silent default."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from sgpo.core import (
    AlgoConfig,
    ColoringParams,
    Completion,
    InvalidInputError,
    StepJudgement,
    compute_colored_reward,
    compute_group_advantages,
    compute_rts,
    get_algorithm,
    judgement_rts,
    split_steps,
)


def test_group_of_one_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="at least 2 completions per group; got 1") as e:
        compute_group_advantages([1.0])
    assert e.value.field == "rewards"
    with pytest.raises(InvalidInputError, match="completions"):
        get_algorithm(AlgoConfig()).score(["wrong"])


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5, math.inf])
def test_nan_or_out_of_range_reward_names_its_index(bad: float) -> None:
    with pytest.raises(InvalidInputError) as e:
        compute_group_advantages([0.0, bad, 1.0])
    assert e.value.field == "rewards[1]"


def test_judgements_must_match_the_completions() -> None:
    ok = StepJudgement("ok", ("a", "b"), 1, (3, 4))
    with pytest.raises(InvalidInputError) as e:
        get_algorithm(AlgoConfig()).score(["wrong", "wrong"], [ok])
    assert e.value.field == "judgements"
    with pytest.raises(InvalidInputError) as e:
        StepJudgement("ok", ("a", "b"), 1, (3,))
    assert e.value.field == "step_lengths"
    with pytest.raises(InvalidInputError) as e:  # measured in tokens, a judgement needs its lengths
        judgement_rts(StepJudgement("ok", ("a", "b"), 1), "tokens")
    assert e.value.field == "step_lengths"
    with pytest.raises(InvalidInputError, match="uncolored") as e:
        judgement_rts(StepJudgement("failed", ("a", "b")), "steps")
    assert e.value.field == "status"


@pytest.mark.parametrize("first_error", [4, 10, -2])
def test_first_error_beyond_the_steps(first_error: int) -> None:
    with pytest.raises(InvalidInputError, match=r"step index in \[0, 3\]") as e:
        compute_rts([1, 1, 1, 1], first_error)
    assert e.value.field == "first_error_step"


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_response_has_no_steps(text: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        split_steps(text)
    assert e.value.field == "response"
    with pytest.raises(InvalidInputError) as e:
        compute_rts([], -1)
    assert e.value.field == "steps"


@pytest.mark.parametrize(("field", "value"), [("rts", 1.2), ("rts", math.nan), ("beta", 0.0), ("r_max", 1.0)])
def test_coloring_parameters_are_validated(field: str, value: float) -> None:
    kwargs = {"rts": 0.5, "beta": 5.0, "gamma": 0.5, "r_max": 0.5, field: value}
    rts = kwargs.pop("rts")
    with pytest.raises(InvalidInputError) as e:
        compute_colored_reward(rts, ColoringParams(**kwargs))
    assert e.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"beta": 0.0}, "beta"),
        ({"beta": 31.0}, "beta"),
        ({"gamma": 1.5}, "gamma"),
        ({"r_max": 1.0}, "r_max"),
        ({"r_max": float("nan")}, "r_max"),
        ({"rts_unit": "words"}, "rts_unit"),
    ],
)
def test_coloring_params_are_checked_once_for_every_caller(kwargs: dict[str, object], field: str) -> None:
    """ColoringParams is the one definition of the bounds: AlgoConfig (config files) goes through it too."""
    with pytest.raises(InvalidInputError) as e:
        ColoringParams(**kwargs)  # type: ignore[arg-type]
    assert e.value.field == field
    if field != "rts_unit":  # AlgoConfig's Literal rejects a bad unit before
        with pytest.raises(ValidationError, match=f"{field}: must be in"):
            AlgoConfig(**kwargs)  # type: ignore[arg-type]


def test_completion_logprobs_must_match_tokens() -> None:
    with pytest.raises(InvalidInputError) as e:
        Completion("x", (1, 2), (-0.1,))
    assert e.value.field == "logprobs"
    with pytest.raises(InvalidInputError, match="log-probabilities"):
        Completion("x", (1,), (0.5,))


def test_algo_config_rejects_unknown_keys_and_explains_conflicts() -> None:
    with pytest.raises(ValidationError, match="extra"):
        AlgoConfig(bta=5.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="group_size"):
        AlgoConfig(group_size=1)
    with pytest.raises(ValidationError, match="would never color anything"):
        AlgoConfig(algo="sgpo", dynamic_sampling=True)
    assert get_algorithm(AlgoConfig(algo="dapo")).uses_dynamic_sampling
    assert not get_algorithm(AlgoConfig()).uses_dynamic_sampling
