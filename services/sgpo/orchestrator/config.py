"""OrchestratorConfig: where prompts come from, which services to call, how groups are scored and paced."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from sgpo.common.prompts import PromptConfig
from sgpo.common.settings import ServiceConfig
from sgpo.core.config import AlgoConfig


class SamplingConfig(BaseModel):
    """Sampling parameters for RL rollouts (vLLM names)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0)
    """Softmax temperature; RL needs > 0 for diverse groups."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: int = Field(256, ge=1)
    """Longest completion in tokens."""
    stop: list[str] = []
    """Stop strings (not included in the completion)."""


class RetryConfig(BaseModel):
    """Retries of a call to a service that is down or slow."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(6, ge=1)
    """Tries per call before the group is given up (never enqueued partially)."""
    backoff_s: float = Field(0.5, ge=0.0)
    """First wait between tries; doubles each time."""
    max_backoff_s: float = Field(8.0, ge=0.0)
    """Longest wait between tries."""


class JudgeAlarmConfig(BaseModel):
    """The loud-failure alarm: a judge that fails quietly turns SGPO into GRPO; this says so, or stops the run."""

    model_config = ConfigDict(extra="forbid")

    window: int = Field(64, ge=1)
    """The alarm looks at the last this-many responses sent to the judge."""
    min_judged: int = Field(16, ge=1)
    """No alarm before this many responses were judged (a few early failures are noise)."""
    max_failed_share: float = Field(0.5, ge=0.0, le=1.0)
    """The alarm is on while more than this share of the window failed (judge call failed, timed out, or
    returned status `failed`); it goes off again once the share falls back under it."""
    on_alarm: Literal["warn", "stop"] = "warn"
    """warn: log at ERROR, set sgpo_orchestrator_judge_alarm and the status file, go on (uncolored groups
    train as GRPO). stop: the same, then stop producing groups (the orchestrator exits 0 with the reason in
    its status; `sgpo train` stops the run)."""

    @model_validator(mode="after")
    def _check(self) -> JudgeAlarmConfig:
        if self.min_judged > self.window:
            raise ValueError(
                f"judge_alarm.min_judged = {self.min_judged} exceeds window = {self.window}: the alarm could "
                "never fire; lower min_judged or raise window"
            )
        return self


class OrchestratorConfig(ServiceConfig):
    """The orchestrator service (`sgpo serve orchestrator`)."""

    model_config = SettingsConfigDict(
        env_prefix="SGPO_ORCHESTRATOR__", extra="forbid", env_nested_delimiter="__"
    )
    service: ClassVar[str] = "orchestrator"

    run_id: str = "default"
    """Names this run's Redis keys (sgpo:{run_id}:...); trainer and orchestrator must agree."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the group queue. A password may be in the URL (`redis://:PASS@host:6379/0`), but prefer
    `redis_password_file` or the `SGPO_REDIS_PASSWORD` environment variable; logs show the URL redacted."""
    redis_password_file: Path | None = None
    """File holding the Redis password (first line); wins over `SGPO_REDIS_PASSWORD`, loses to a password in
    `redis_url`."""
    dataset: Path | None = None
    """JSONL of prompts with `problem` and `answer` (optional `solution`, `unique_id`); required unless replaying."""
    replay: Path | None = None
    """Offline mode: replay groups recorded by `sgpo record` instead of generating."""
    epochs: int = Field(1, ge=0)
    """Passes over the dataset (or the recorded file); 0 means until stopped."""
    shuffle: bool = True
    """Shuffle the prompts every epoch."""
    seed: int = 0
    """Seed for shuffling and sampling."""
    prompt: PromptConfig = PromptConfig()
    """How a problem becomes the policy's prompt (`sgpo.common.prompts`, the renderer `sgpo eval` and held-out
    evaluation share): plain `"{problem}\n"` by default; `format = "chat"` with `tokenizer` (the policy folder)
    and `system` for a chat model. Its stop strings are added to `sampling.stop`."""
    algo: AlgoConfig = AlgoConfig()
    """Rewards, coloring and advantages (shared with the trainer)."""
    sampling: SamplingConfig = SamplingConfig()
    """Rollout sampling."""
    generator_target: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1:50051"])
    """host:port of the generator's gRPC server, or of each replica: a list, or one comma-separated string
    (`SGPO_ORCHESTRATOR__GENERATOR_TARGET=gen-0:50051,gen-1:50051`). Each Generate call goes to the least
    loaded replica holding the policy version the staleness bound asks for."""
    replica_wait_s: float = Field(600.0, gt=0)
    """How long a Generate call waits for a replica with a recent enough policy version (every one down, or
    still loading weights) before it counts as a failed try."""
    verifier_target: str = "127.0.0.1:50052"
    """host:port of the verifier's gRPC server."""
    judge_target: str = "127.0.0.1:50053"
    """host:port of the judge's gRPC server (used only for groups that need coloring)."""
    prompts_per_request: int = Field(8, ge=1)
    """Prompts sent to the generator in one Generate call."""
    max_concurrency: int = Field(2, ge=1)
    """Generate requests in flight at once (verification and judging overlap with them)."""
    generate_timeout_s: float = Field(600.0, gt=0)
    """Deadline of one Generate call."""
    verify_timeout_s: float = Field(120.0, gt=0)
    """Deadline of one Verify call."""
    judge_timeout_s: float | None = Field(None, gt=0)
    """Deadline of one Judge call. Unset: derived from the judge's per-response budget and concurrency,
    judge_response_budget_s * ceil(responses / judge_concurrency) + judge_slack_s, so a group of 8 long answers
    gets the time its responses need."""
    judge_response_budget_s: float = Field(300.0, gt=0)
    """Wall-clock budget the judge gives one response (the llm backend's response_budget_s: keep them equal)."""
    judge_concurrency: int = Field(8, ge=1)
    """Responses the judge works on at once (the llm backend's max_concurrency)."""
    judge_slack_s: float = Field(10.0, ge=0)
    """Added to the derived deadline for the network and the judge's own work."""
    judge_attempts: int = Field(2, ge=1)
    """Judge calls per group. A later call re-sends only the responses not yet judged `ok` (the call failed or
    timed out, or their judgement failed); the judge answers the ones it has meanwhile judged from its cache
    and joins those still in flight, so a group is never re-judged from scratch."""
    judge_alarm: JudgeAlarmConfig = JudgeAlarmConfig()
    """When the share of failed judgements over a window is too high: warn loudly or stop the run."""
    status_path: Path | None = None
    """If set, rewritten (atomically) after each judged group: the judge's failed share over the alarm window,
    whether the alarm is on, and why the run stopped (if it did). `sgpo train` shows it on its progress line."""
    retry: RetryConfig = RetryConfig()
    """Retries for generator and verifier calls."""
    batch_groups: int = Field(8, ge=1)
    """Groups the trainer takes per step; with max_policy_lag it sets how far generation may run ahead."""
    max_policy_lag: int = Field(1, ge=0)
    """Generate groups for trainer step s only once the trainer's policy version is >= s - max_policy_lag."""
    high_water: int = Field(256, ge=1)
    """Pause while this many groups are queued and not yet acknowledged."""
    max_groups: int = Field(0, ge=0)
    """Stop after enqueueing this many groups (0: no limit)."""
    state_path: Path | None = None
    """The durable position in the dataset (JSON, rewritten atomically after each chunk; a copy also goes to
    Redis, `sgpo:{run_id}:progress`). A restart resumes from the further of the two, so set it on a volume
    that outlives the process: then neither a Redis that comes back empty nor a lost local disk replays the
    dataset from its start (docs/design.md §5)."""
    stats_path: Path | None = None
    """If set, append one JSON line per enqueued group (kind, colored, accuracy, reward, timings)."""

    def judge_deadline_s(self, n_responses: int) -> float:
        """Deadline of one Judge call for `n_responses` responses."""
        if self.judge_timeout_s is not None:
            return self.judge_timeout_s
        rounds = max(1, math.ceil(n_responses / self.judge_concurrency))
        return self.judge_response_budget_s * rounds + self.judge_slack_s

    @field_validator("generator_target", mode="before")
    @classmethod
    def _split_targets(cls, v: Any) -> Any:
        return split_targets(v)

    @model_validator(mode="after")
    def _check(self) -> OrchestratorConfig:
        if not self.generator_target:
            raise ValueError("generator_target is empty; give the generator's host:port (or one per replica)")
        if len(set(self.generator_target)) != len(self.generator_target):
            raise ValueError(f"generator_target lists a replica twice: {self.generator_target}")
        if self.dataset is None and self.replay is None:
            raise ValueError("set `dataset` (a JSONL of problems) or `replay` (a file from `sgpo record`)")
        if self.algo.group_size < 2:
            raise ValueError(
                f"GRPO needs at least 2 generations per prompt; got algo.group_size={self.algo.group_size}"
            )
        if self.prompt.format == "chat" and self.prompt.tokenizer is None:
            raise ValueError(
                "prompt.format = 'chat' renders with the policy's chat template: set prompt.tokenizer to the "
                "policy's model folder (the generator's model)"
            )
        if self.sampling.temperature == 0.0:
            raise ValueError(
                "sampling.temperature = 0 makes every completion of a group identical; use > 0 for RL"
            )
        return self


def split_targets(v: Any) -> Any:
    """`"a:1, b:2"` -> ["a:1", "b:2"] (a list is kept as given); how every target list is read."""
    if isinstance(v, str):
        return [t.strip() for t in v.split(",") if t.strip()]
    return v
