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
    """Held-out prompts per difficulty level for the periodic evaluation."""
    eval_samples: int
    """Completions per held-out prompt; held-out accuracy is their mean (avg@k)."""
    eval_temperature: float
    """Sampling temperature of the held-out evaluation (0: greedy, one completion per prompt)."""
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
    lr=3e-4,
    max_tokens=160,
    temperature=1.0,
    train_per_level=2000,
    eval_per_level=100,
    eval_samples=4,
    eval_temperature=1.0,
    eval_every=20,
    checkpoint_every=10,
    max_policy_lag=1,
)
TRAIN_PRESETS: dict[str, TrainPreset] = {"tiny": TINY}
