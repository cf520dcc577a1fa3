"""SGPO coloring: from a judge's first-error index to a graded reward, and a group's final rewards.

rts = (length of the steps before the first error) / (total length), tokens or steps (DESIGN.md §1);
a wrong response with no located error keeps the prefix up to, not including, its last step.
colored reward = r_max * sigmoid(beta * (rts - gamma)), strictly inside (0, r_max) and below 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.core.advantages import classify_group, compute_group_advantages
from sgpo.core.config import AlgoConfig, ColorScope
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import GroupKind, VerdictStatus

MAX_BETA = 30.0  # keeps sigmoid(beta * (rts - gamma)) strictly inside (0, 1) in float64


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


def compute_colored_reward(rts: float, *, beta: float = 5.0, gamma: float = 0.5, r_max: float = 0.5) -> float:
    if math.isnan(rts) or not 0.0 <= rts <= 1.0:
        raise InvalidInputError("rts", f"must be in [0, 1]; got {rts!r}")
    if not 0.0 < beta <= MAX_BETA:
        raise InvalidInputError("beta", f"must be in (0, {MAX_BETA}]; got {beta!r}")
    if not 0.0 <= gamma <= 1.0:
        raise InvalidInputError("gamma", f"must be in [0, 1]; got {gamma!r}")
    if not 0.0 < r_max < 1.0:
        raise InvalidInputError(
            "r_max", f"must be in (0, 1) so colored rewards stay below correct ones; got {r_max!r}"
        )
    return r_max / (1.0 + math.exp(-beta * (rts - gamma)))


def select_for_coloring(statuses: Sequence[VerdictStatus], scope: ColorScope) -> list[bool]:
    """Which completions the judge must read: the wrong ones of an all-negative group, or of any group."""
    if scope == "all_negative" and classify_group(statuses) != "all_negative":
        return [False] * len(statuses)
    return [s == "wrong" for s in statuses]


@dataclass(frozen=True, slots=True)
class ScoredGroup:
    rewards: list[float]
    advantages: list[float]
    kind: GroupKind
    colored: bool
    # Coloring was needed but a judgement was missing: the group fell back to plain GRPO rewards.
    uncolorable: bool


def compute_group_scores(
    statuses: Sequence[VerdictStatus],
    colored_rewards: Sequence[float | None],
    cfg: AlgoConfig,
) -> ScoredGroup:
    """Rewards and advantages of one group.

    `colored_rewards[i]` is the judge's colored reward of completion i, or None where it was not judged or
    the judge failed. If any completion selected for coloring lacks one, the group is left uncolored
    (plain 0/1 rewards) and flagged `uncolorable`: a judge failure never invents a reward.
    """
    if len(statuses) < 2:
        raise InvalidInputError("completions", f"a group needs at least 2 completions; got {len(statuses)}")
    if len(colored_rewards) != len(statuses):
        raise InvalidInputError(
            "colored_rewards",
            f"needs one entry per completion; got {len(colored_rewards)} for {len(statuses)}",
        )
    kind = classify_group(statuses)
    rewards = [1.0 if s == "correct" else 0.0 for s in statuses]
    wanted = select_for_coloring(statuses, cfg.color_scope) if cfg.algo == "sgpo" else [False] * len(statuses)
    colored = uncolorable = False
    if any(wanted):
        if all(c is not None for c, w in zip(colored_rewards, wanted, strict=True) if w):
            for i, w in enumerate(wanted):
                c = colored_rewards[i]
                if w and c is not None:
                    if math.isnan(c) or not 0.0 < c < 1.0:
                        raise InvalidInputError(f"colored_rewards[{i}]", f"must be in (0, 1); got {c!r}")
                    rewards[i] = c
            colored = True
        else:
            uncolorable = True
    mask = [s != "unscorable" for s in statuses]
    advantages = compute_group_advantages(
        rewards, std_normalize=cfg.std_normalize, eps=cfg.adv_eps, mask=mask
    )
    return ScoredGroup(rewards, advantages, kind, colored, uncolorable)
