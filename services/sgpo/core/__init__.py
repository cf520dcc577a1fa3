"""The SGPO algorithm, pure and light (no torch, no I/O): records, advantages, coloring, step splitting.

Every service computes rewards and advantages through these functions, and so does `sgpo simulate`.
"""

from sgpo.core.advantages import (
    classify_group,
    compute_group_advantages,
    is_all_negative,
    keep_for_dynamic_sampling,
    validate_rewards,
)
from sgpo.core.coloring import (
    ScoredGroup,
    compute_colored_reward,
    compute_group_scores,
    compute_rts,
    select_for_coloring,
)
from sgpo.core.config import AlgoConfig, ColorScope, LossAgg, RtsUnit
from sgpo.core.errors import InvalidInputError
from sgpo.core.steps import SplitMode, Step, compute_step_token_counts, split_steps
from sgpo.core.types import Completion, Group, GroupKind, StepJudgement, Verdict, VerdictStatus

__all__ = [
    "AlgoConfig",
    "ColorScope",
    "Completion",
    "Group",
    "GroupKind",
    "InvalidInputError",
    "LossAgg",
    "RtsUnit",
    "ScoredGroup",
    "SplitMode",
    "Step",
    "StepJudgement",
    "Verdict",
    "VerdictStatus",
    "classify_group",
    "compute_colored_reward",
    "compute_group_advantages",
    "compute_group_scores",
    "compute_rts",
    "compute_step_token_counts",
    "is_all_negative",
    "keep_for_dynamic_sampling",
    "select_for_coloring",
    "split_steps",
    "validate_rewards",
]
