"""Run presets: everything `sgpo train --preset NAME` needs besides the policy itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainPreset:
    name: str
    steps: int
    """Trainer steps of a default run."""
    batch_groups: int
    """Groups (prompts) per trainer step."""
    group_size: int
    """Completions per prompt (G)."""
    lr: float
    """Trainer AdamW learning rate."""
    max_tokens: int
    """Longest completion."""
    temperature: float
    """Rollout sampling temperature."""
    train_per_level: int
    """RL prompts per difficulty level."""
    eval_per_level: int
    """Held-out prompts per difficulty level for the periodic greedy evaluation."""
    eval_every: int
    """Evaluate every this many trainer steps (and at the start and the end)."""
    checkpoint_every: int
    """Trainer checkpoint interval."""
    max_policy_lag: int
    """How many policy versions generation may run ahead of the trainer."""


TINY = TrainPreset(
    name="tiny",
    steps=60,
    batch_groups=16,
    group_size=8,
    lr=2e-4,
    max_tokens=160,
    temperature=1.0,
    train_per_level=2000,
    eval_per_level=100,
    eval_every=10,
    checkpoint_every=10,
    max_policy_lag=1,
)
TRAIN_PRESETS: dict[str, TrainPreset] = {"tiny": TINY}
