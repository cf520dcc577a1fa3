"""Group-relative advantages (GRPO, Dr.GRPO) and the group classification they depend on.

A_i = (r_i - mean(r)) / (std(r) + eps) over the scorable completions of one group; Dr.GRPO drops the
division. Unscorable completions (verifier timeout, unparseable) get advantage 0 and do not enter the
statistics: they are neither right nor wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sgpo.core.errors import InvalidInputError
from sgpo.core.types import GroupKind, VerdictStatus


def validate_rewards(rewards: Sequence[float], field: str = "rewards") -> None:
    """Rewards must be finite and in [0, 1] (1 = correct; colored rewards stay below it)."""
    for i, r in enumerate(rewards):
        if not isinstance(r, int | float) or math.isnan(r) or not 0.0 <= r <= 1.0:
            raise InvalidInputError(f"{field}[{i}]", f"must be a finite number in [0, 1]; got {r!r}")


def compute_group_advantages(
    rewards: Sequence[float],
    *,
    std_normalize: bool = True,
    eps: float = 1e-6,
    mask: Sequence[bool] | None = None,
) -> list[float]:
    """Advantages of one group. `mask[i] = False` excludes completion i (advantage 0).

    std is the sample standard deviation (n - 1), as in TRL and verl.
    """
    if len(rewards) < 2:
        raise InvalidInputError("rewards", f"GRPO needs at least 2 completions per group; got {len(rewards)}")
    validate_rewards(rewards)
    if mask is None:
        mask = [True] * len(rewards)
    if len(mask) != len(rewards):
        raise InvalidInputError(
            "mask", f"needs one flag per reward; got {len(mask)} for {len(rewards)} rewards"
        )
    kept = [r for r, m in zip(rewards, mask, strict=True) if m]
    if len(kept) < 2:
        return [0.0] * len(rewards)
    mean = sum(kept) / len(kept)
    if not std_normalize:
        return [(r - mean) if m else 0.0 for r, m in zip(rewards, mask, strict=True)]
    std = math.sqrt(sum((r - mean) ** 2 for r in kept) / (len(kept) - 1))
    return [(r - mean) / (std + eps) if m else 0.0 for r, m in zip(rewards, mask, strict=True)]


def classify_group(statuses: Sequence[VerdictStatus]) -> GroupKind:
    """all_negative: no correct answer among >= 2 scorable ones; unscorable: fewer than 2 scorable."""
    correct = sum(s == "correct" for s in statuses)
    wrong = sum(s == "wrong" for s in statuses)
    if correct + wrong < 2:
        return "unscorable"
    if correct == 0:
        return "all_negative"
    return "all_positive" if wrong == 0 else "mixed"


def keep_for_dynamic_sampling(statuses: Sequence[VerdictStatus]) -> bool:
    """DAPO's filter: keep a group only if its accuracy is strictly between 0 and 1.

    Decided on verifier accuracy alone, never on a shaped (colored) reward.
    """
    return classify_group(statuses) == "mixed"
