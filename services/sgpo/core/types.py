"""Typed records shared by every service: completions, verdicts, judgements and groups.

Plain frozen dataclasses (no torch, no I/O); `sgpo.common.convert` maps them to and from protobuf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from sgpo.core.errors import InvalidInputError

VerdictStatus = Literal["correct", "wrong", "unscorable"]
JudgeStatus = Literal["ok", "failed"]
GroupKind = Literal["all_negative", "all_positive", "mixed", "unscorable"]
FinishReason = Literal["stop", "length", "abort"]
Algo = Literal["sgpo", "grpo", "drgrpo", "dapo"]

VERDICT_STATUSES: tuple[VerdictStatus, ...] = ("correct", "wrong", "unscorable")


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled response: text, tokens, the behaviour policy's logprobs of those tokens."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason = "stop"
    policy_version: int = 0
    token_char_starts: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if len(self.logprobs) != len(self.token_ids):
            raise InvalidInputError(
                "logprobs",
                f"needs one value per token; got {len(self.logprobs)} for {len(self.token_ids)} tokens",
            )
        if self.token_char_starts and len(self.token_char_starts) != len(self.token_ids):
            raise InvalidInputError(
                "token_char_starts",
                f"needs one offset per token or none; got {len(self.token_char_starts)} for {len(self.token_ids)} tokens",
            )
        if any(math.isnan(lp) or lp > 1e-4 for lp in self.logprobs):
            raise InvalidInputError("logprobs", "must be log-probabilities (<= 0, not NaN)")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The verifier's decision on one response."""

    status: VerdictStatus
    extracted: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StepJudgement:
    """The judge's reading of one wrong response: its steps, the first wrong one (-1: none found) and the
    measured length of each step (tokens when the response's token offsets were given, else characters).

    No steps (an empty response): nothing precedes the first error. rts and the colored reward are not
    stored here: `sgpo.core.coloring.judgement_rts` and `compute_colored_reward` derive them with the
    run's ColoringParams.
    """

    status: JudgeStatus
    steps: tuple[str, ...] = ()
    first_error_step: int = -1
    step_lengths: tuple[int, ...] = ()
    reason: str = ""
    backend: str = ""

    def __post_init__(self) -> None:
        if self.step_lengths and len(self.step_lengths) != len(self.steps):
            raise InvalidInputError(
                "step_lengths",
                f"needs one length per step or none; got {len(self.step_lengths)} for {len(self.steps)} steps",
            )


@dataclass(frozen=True, slots=True)
class Group:
    """A prompt with its G completions, their scores and advantages: the unit the trainer consumes."""

    group_id: str
    problem: str
    prompt_text: str
    prompt_token_ids: tuple[int, ...]
    answer: str
    completions: tuple[Completion, ...]
    verdicts: tuple[Verdict, ...]
    rewards: tuple[float, ...]
    advantages: tuple[float, ...]
    kind: GroupKind
    colored: bool = False
    judgements: tuple[StepJudgement | None, ...] = ()
    run_id: str = ""
    prompt_id: str = ""
    reference_solution: str = ""
    policy_version: int = 0
    algo: Algo = "sgpo"
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent on this group per service (a batched call's time split evenly among its groups)."""
    created_unix_ms: int = 0

    def __post_init__(self) -> None:
        n = len(self.completions)
        for name in ("verdicts", "rewards", "advantages"):
            got = len(getattr(self, name))
            if got != n:
                raise InvalidInputError(
                    name, f"needs one entry per completion; got {got} for {n} completions"
                )
        if self.judgements and len(self.judgements) != n:
            raise InvalidInputError(
                "judgements", f"needs one entry per completion or none; got {len(self.judgements)} for {n}"
            )
