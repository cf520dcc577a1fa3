"""SGPO coloring: from a judge's first-error index and step lengths to rts and a graded reward.

rts = (length of the steps before the first error) / (total length), in tokens or steps (docs/design.md);
a wrong response with no located error keeps the prefix up to, not including, its last step.
colored reward = r_max * sigmoid(beta * (rts - gamma)), strictly inside (0, r_max) and below 1.
Which completions are colored, and how a group's rewards follow, is decided in `sgpo.core.algos`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sgpo.core.config import ColoringParams, RtsUnit
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import StepJudgement

DEFAULT_COLORING = ColoringParams()


def compute_rts(step_lengths: Sequence[int], first_error_step: int) -> float:
    """Share of the response before its first error; `step_lengths` in tokens (or 1 per step)."""
    n = len(step_lengths)
    if n == 0:
        raise InvalidInputError("steps", "a judged response needs at least one step; got an empty response")
    if not -1 <= first_error_step < n:
        raise InvalidInputError(
            "first_error_step",
            f"must be -1 (none found) or a step index in [0, {n - 1}]; got {first_error_step}",
        )
    if any(length < 0 for length in step_lengths):
        raise InvalidInputError("step_lengths", f"must be >= 0; got {list(step_lengths)}")
    total = sum(step_lengths)
    if total == 0:
        raise InvalidInputError("step_lengths", "the steps have zero total length; the response is empty")
    prefix = n - 1 if first_error_step == -1 else first_error_step
    return sum(step_lengths[:prefix]) / total


def judgement_rts(j: StepJudgement, unit: RtsUnit) -> float:
    """rts of a successful judgement: its measured step lengths, or 1 per step with unit = "steps".

    A judgement with no steps (an empty response) has nothing before its first error: rts 0.
    """
    if j.status != "ok":
        raise InvalidInputError("status", "a failed judgement has no rts; leave its completion uncolored")
    if not j.steps:
        return 0.0
    if unit == "steps":
        return compute_rts([1] * len(j.steps), j.first_error_step)
    if len(j.step_lengths) != len(j.steps):
        raise InvalidInputError(
            "step_lengths",
            f"rts in {unit} needs one length per step; got {len(j.step_lengths)} for {len(j.steps)}",
        )
    return compute_rts(j.step_lengths, j.first_error_step)


def compute_colored_reward(rts: float, params: ColoringParams = DEFAULT_COLORING) -> float:
    """r_max * sigmoid(beta * (rts - gamma)); `params` were checked when they were built."""
    if not isinstance(rts, int | float) or math.isnan(rts) or not 0.0 <= rts <= 1.0:
        raise InvalidInputError("rts", f"must be in [0, 1]; got {rts!r}")
    return params.r_max / (1.0 + math.exp(-params.beta * (rts - params.gamma)))
