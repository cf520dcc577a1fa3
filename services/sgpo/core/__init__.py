"""The SGPO algorithm, pure and light (no torch, no I/O): records, algorithms, coloring, step splitting.

Every scoring decision lives here: `algos` (which completions are judged; rewards, advantages, keep/drop per
algorithm), `coloring` (rts and the colored reward from a judge's first error and step lengths),
`advantages` (group statistics), `config` (AlgoConfig, ColoringParams). Every service, and `sgpo simulate`,
scores through these.
"""

from sgpo.core.advantages import (
    classify_group,
    compute_group_advantages,
    keep_for_dynamic_sampling,
    validate_rewards,
)
from sgpo.core.algos import (
    ALGORITHMS,
    Algorithm,
    GroupScore,
    get_algorithm,
    select_for_coloring,
)
from sgpo.core.coloring import compute_colored_reward, compute_rts, judgement_rts
from sgpo.core.config import AlgoConfig, ColoringParams, ColorScope, LossAgg, RtsUnit
from sgpo.core.errors import InvalidInputError
from sgpo.core.steps import SplitMode, Step, compute_step_token_counts, segment_steps, split_steps
from sgpo.core.types import Algo, Completion, Group, GroupKind, StepJudgement, Verdict, VerdictStatus

__all__ = [
    "ALGORITHMS",
    "Algo",
    "AlgoConfig",
    "Algorithm",
    "ColorScope",
    "ColoringParams",
    "Completion",
    "Group",
    "GroupKind",
    "GroupScore",
    "InvalidInputError",
    "LossAgg",
    "RtsUnit",
    "SplitMode",
    "Step",
    "StepJudgement",
    "Verdict",
    "VerdictStatus",
    "classify_group",
    "compute_colored_reward",
    "compute_group_advantages",
    "compute_rts",
    "compute_step_token_counts",
    "get_algorithm",
    "judgement_rts",
    "keep_for_dynamic_sampling",
    "segment_steps",
    "select_for_coloring",
    "split_steps",
    "validate_rewards",
]
