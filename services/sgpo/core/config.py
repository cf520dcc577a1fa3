"""AlgoConfig: the algorithm's knobs, shared by orchestrator (rewards, advantages) and trainer (loss); and
ColoringParams, the one place where beta / gamma / r_max / rts_unit are checked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sgpo.core.errors import InvalidInputError
from sgpo.core.steps import SplitMode
from sgpo.core.types import Algo

ColorScope = Literal["all_negative", "all_incorrect"]
RtsUnit = Literal["tokens", "steps"]
LossAgg = Literal["token_mean", "seq_mean_token_mean"]

MAX_BETA = 30.0  # keeps sigmoid(beta * (rts - gamma)) strictly inside (0, 1) in float64


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and not math.isnan(x)


@dataclass(frozen=True, slots=True)
class ColoringParams:
    """colored reward = r_max * sigmoid(beta * (rts - gamma)), rts measured in tokens or steps.

    Every check of these four values lives here: AlgoConfig, the judge's HTTP overrides and
    `compute_colored_reward` all build one. A bad value raises InvalidInputError naming the field.
    """

    beta: float = 5.0
    gamma: float = 0.5
    r_max: float = 0.5
    rts_unit: RtsUnit = "tokens"

    def __post_init__(self) -> None:
        if not (_is_number(self.beta) and 0.0 < self.beta <= MAX_BETA):
            raise InvalidInputError("beta", f"must be in (0, {MAX_BETA}]; got {self.beta!r}")
        if not (_is_number(self.gamma) and 0.0 <= self.gamma <= 1.0):
            raise InvalidInputError("gamma", f"must be in [0, 1]; got {self.gamma!r}")
        if not (_is_number(self.r_max) and 0.0 < self.r_max < 1.0):
            raise InvalidInputError(
                "r_max", f"must be in (0, 1) so colored rewards stay below correct ones; got {self.r_max!r}"
            )
        if self.rts_unit not in ("tokens", "steps"):
            raise InvalidInputError("rts_unit", f"must be 'tokens' or 'steps'; got {self.rts_unit!r}")


class AlgoConfig(BaseModel):
    """How groups become rewards and advantages, and how the policy loss is aggregated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algo: Algo = "sgpo"
    """sgpo: GRPO plus coloring of all-negative groups; grpo: no coloring; drgrpo: GRPO without the std
    division; dapo: dynamic sampling, no coloring (see sgpo.core.algos)."""
    group_size: int = Field(8, ge=2)
    """Completions sampled per prompt (G). GRPO needs at least 2."""
    color_scope: ColorScope = "all_negative"
    """all_negative (the paper): color only groups with no correct answer; all_incorrect: every wrong answer."""
    beta: float = 5.0
    """Steepness of the colored reward r_max * sigmoid(beta * (rts - gamma)); in (0, 30]."""
    gamma: float = 0.5
    """RTS at which the colored reward is r_max / 2; in [0, 1]."""
    r_max: float = 0.5
    """Upper bound of colored rewards, in (0, 1): below 1 so a wrong answer never ties a correct one."""
    rts_unit: RtsUnit = "tokens"
    """Measure the correct prefix in tokens or in steps."""
    step_split: SplitMode = "auto"
    """How responses are split into steps for the judge."""
    std_normalize: bool = True
    """Divide advantages by the group's std (GRPO); false gives Dr.GRPO's advantages (as algo = drgrpo)."""
    adv_eps: float = Field(1e-6, gt=0.0)
    """Added to the std before dividing."""
    clip_eps_low: float = Field(0.2, ge=0.0, lt=1.0)
    """PPO clip: ratio floor 1 - clip_eps_low."""
    clip_eps_high: float = Field(0.2, ge=0.0)
    """PPO clip: ratio ceiling 1 + clip_eps_high (DAPO's clip-higher uses 0.28)."""
    kl_coef: float = Field(0.0, ge=0.0)
    """Weight of the k3 KL estimate to the frozen reference policy; 0 disables the reference model."""
    loss_agg: LossAgg = "token_mean"
    """token_mean: mean over all tokens of the batch; seq_mean_token_mean: per-sequence mean, then mean (GRPO)."""
    dynamic_sampling: bool | None = None
    """Drop groups whose accuracy is 0 or 1 and sample more prompts; None: on exactly for algo = dapo
    (`get_algorithm(cfg).uses_dynamic_sampling` says which)."""
    dynamic_sampling_max_rounds: int = Field(8, ge=1)
    """With dynamic sampling: at most this many sampling rounds to fill one batch."""

    @model_validator(mode="after")
    def _check(self) -> AlgoConfig:
        _ = self.coloring  # beta, gamma, r_max, rts_unit: checked by ColoringParams, the one definition
        if self.dynamic_sampling and self.algo == "sgpo" and self.color_scope == "all_negative":
            raise ValueError(
                "dynamic_sampling drops every all-negative group, so algo='sgpo' with color_scope='all_negative' "
                "would never color anything; use algo='dapo', set color_scope='all_incorrect', "
                "or set dynamic_sampling=false"
            )
        return self

    @property
    def coloring(self) -> ColoringParams:
        return ColoringParams(self.beta, self.gamma, self.r_max, self.rts_unit)
