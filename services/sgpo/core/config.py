"""AlgoConfig: the algorithm's knobs, shared by orchestrator (rewards, advantages) and trainer (loss)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sgpo.core.steps import SplitMode
from sgpo.core.types import Algo

ColorScope = Literal["all_negative", "all_incorrect"]
RtsUnit = Literal["tokens", "steps"]
LossAgg = Literal["token_mean", "seq_mean_token_mean"]


class AlgoConfig(BaseModel):
    """How groups become rewards and advantages, and how the policy loss is aggregated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algo: Algo = "sgpo"
    """sgpo: GRPO plus coloring of all-negative groups; grpo: no coloring; dapo: dynamic sampling, no coloring."""
    group_size: int = Field(8, ge=2)
    """Completions sampled per prompt (G). GRPO needs at least 2."""
    color_scope: ColorScope = "all_negative"
    """all_negative (the paper): color only groups with no correct answer; all_incorrect: every wrong answer."""
    beta: float = Field(5.0, gt=0.0, le=30.0)
    """Steepness of the colored reward r_max * sigmoid(beta * (rts - gamma))."""
    gamma: float = Field(0.5, ge=0.0, le=1.0)
    """RTS at which the colored reward is r_max / 2."""
    r_max: float = Field(0.5, gt=0.0, lt=1.0)
    """Upper bound of colored rewards; below 1 so a wrong answer never ties a correct one."""
    rts_unit: RtsUnit = "tokens"
    """Measure the correct prefix in tokens or in steps."""
    step_split: SplitMode = "auto"
    """How responses are split into steps for the judge."""
    std_normalize: bool = True
    """Divide advantages by the group's std (GRPO); false gives Dr.GRPO."""
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
    """Drop groups whose accuracy is 0 or 1 and sample more prompts; None means on exactly for algo = dapo."""
    dynamic_sampling_max_rounds: int = Field(8, ge=1)
    """With dynamic sampling: at most this many sampling rounds to fill one batch."""

    @model_validator(mode="after")
    def _check(self) -> AlgoConfig:
        if self.dynamic_sampling and self.algo == "sgpo" and self.color_scope == "all_negative":
            raise ValueError(
                "dynamic_sampling drops every all-negative group, so algo='sgpo' with color_scope='all_negative' "
                "would never color anything; use algo='dapo', set color_scope='all_incorrect', "
                "or set dynamic_sampling=false"
            )
        return self

    @property
    def uses_dynamic_sampling(self) -> bool:
        return self.algo == "dapo" if self.dynamic_sampling is None else self.dynamic_sampling
