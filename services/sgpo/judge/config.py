"""JudgeConfig: which backend locates first errors, the coloring defaults, and the serving limits.

The backend is a union keyed by its `type` field (`symbolic | llm | prm | cascade`), so a TOML file reads

    [judge.backend]
    type = "llm"
    base_url = "http://127.0.0.1:8000/v1"

and the environment `SGPO_JUDGE__BACKEND__TYPE=llm SGPO_JUDGE__BACKEND__BASE_URL=...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from sgpo.common.settings import ServiceConfig
from sgpo.core import AlgoConfig

BackendType = Literal["symbolic", "llm", "prm", "cascade"]
BACKEND_TYPES: tuple[BackendType, ...] = ("symbolic", "llm", "prm", "cascade")


class SymbolicBackend(BaseModel):
    """Checks every arithmetic claim `expression = value`; the first step with a false claim is the error."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["symbolic"] = "symbolic"
    """Backend selector."""
    chain_check: bool = True
    """In a response made only of `a op b = c` steps (the synthetic task's format), a step must start from the
    previous step's result and a final `Answer: N` line must repeat it. Off: only arithmetic is checked."""
    reference_check: bool = True
    """When the reference solution is itself made only of `a op b = c` steps, step k of the response must do the
    reference's step k (same operands and operation, in either order for + and *); a copied wrong operand, a
    dropped step or an early answer is the first error. Off: the reference solution is ignored."""
    accept_rounding: bool = True
    """Accept a decimal written with d places when it is within 10^-d of the exact value (1/3 = 0.33)."""


class LlmBackend(BaseModel):
    """Any OpenAI-compatible chat endpoint (a vLLM server with a large judge model in production)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["llm"] = "llm"
    """Backend selector."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint root; the backend POSTs to `{base_url}/chat/completions`."""
    model: str = "judge"
    """Model name sent in each request (vLLM's served model name)."""
    api_key: SecretStr | None = None
    """Sent as `Authorization: Bearer <key>` when set."""
    max_concurrency: int = Field(8, ge=1, le=1024)
    """At most this many requests in flight to the endpoint, over all callers of this judge."""
    timeout_s: float = Field(120.0, gt=0.0)
    """Read timeout of one request (a long critique from a large model takes a while)."""
    connect_timeout_s: float = Field(5.0, gt=0.0)
    """Connect timeout of one request."""
    max_retries: int = Field(3, ge=0, le=20)
    """Retries after a timeout, a connection error, HTTP 429 or 5xx (not after other 4xx or a bad reply)."""
    backoff_s: float = Field(0.5, ge=0.0)
    """First retry waits about this long; each further retry doubles it (with jitter)."""
    backoff_max_s: float = Field(10.0, ge=0.0)
    """Cap of one backoff wait."""
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    """Sampling temperature of the judge model (0: greedy, reproducible)."""
    max_tokens: int = Field(4096, ge=16)
    """Completion budget of one critique."""
    cache_size: int = Field(10_000, ge=0)
    """Replies kept in memory, keyed by a hash of the exact request; 0 disables the cache."""
    include_reference: bool = True
    """Show the reference solution to the judge model when the request has one."""


class PrmBackend(BaseModel):
    """A process reward model run with transformers: the first step whose score falls below `threshold`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["prm"] = "prm"
    """Backend selector."""
    model_path: Path | None = None
    """Local folder with the model and its tokenizer (Hugging Face format). Required."""
    model_class: Literal["token_classification", "auto"] = "token_classification"
    """token_classification: AutoModelForTokenClassification (2 labels per token); auto: AutoModel (e.g.
    Qwen2.5-Math-PRM with trust_remote_code), whose output's logits are read the same way."""
    trust_remote_code: bool = False
    """Let transformers run the model folder's own code (needed by some PRMs; only for folders you trust)."""
    prompt_template: str = "{problem}\n\n"
    """Text before the first step; `{problem}` is replaced by the problem."""
    step_tag: str = "\n\n"
    """Appended to every step; the score of a step is read at the last token of its tag."""
    suffix: str = ""
    """Text after the last step (e.g. an end-of-turn token)."""
    positive_label: int = Field(1, ge=0)
    """Index of the 'step is correct' class in the model's logits."""
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    """A step whose probability of being correct is below this is the first error."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: cuda when available, else cpu."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: bfloat16 on cuda, float32 on cpu."""
    max_length: int = Field(4096, ge=8)
    """Longer inputs are not truncated: their judgement is `failed` (a truncated response cannot be scored)."""
    batch_size: int = Field(8, ge=1)
    """Responses per forward pass."""

    @model_validator(mode="after")
    def _need_model(self) -> PrmBackend:
        if self.model_path is None:
            raise ValueError(
                "the prm backend needs a model: set model_path in [judge.backend] "
                "(or SGPO_JUDGE__BACKEND__MODEL_PATH) to a local Hugging Face model folder"
            )
        return self


class CascadeBackend(BaseModel):
    """`symbolic` first; `llm` only for responses whose arithmetic is clean (it saves those LLM calls)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["cascade"] = "cascade"
    """Backend selector."""
    symbolic: SymbolicBackend = SymbolicBackend()
    """The first stage."""
    llm: LlmBackend = LlmBackend()
    """The second stage, asked only where the first found no error."""


Backend = Annotated[SymbolicBackend | LlmBackend | PrmBackend | CascadeBackend, Field(discriminator="type")]


class JudgeConfig(ServiceConfig):
    """The judge service: gRPC `JudgeService.Judge` and HTTP `POST /v1/judge` in one process."""

    model_config = SettingsConfigDict(env_prefix="SGPO_JUDGE__", extra="forbid", env_nested_delimiter="__")
    service: ClassVar[str] = "judge"

    backend: Backend = SymbolicBackend()
    """How first errors are located; a table keyed by `type` (symbolic | llm | prm | cascade)."""
    algo: AlgoConfig = AlgoConfig()
    """Coloring defaults (beta, gamma, r_max, rts_unit) and step_split; a request's coloring overrides the
    first four. Shared with the orchestrator through the top-level [algo] table."""
    http_enabled: bool = True
    """Serve HTTP `POST /v1/judge`, /healthz, /metrics and the OpenAPI schema next to gRPC."""
    http_port: int = Field(0, ge=0, le=65535)
    """HTTP port (on `host`); 0 picks a free one (printed at start)."""
    api_keys: list[SecretStr] = Field(default_factory=list)
    """HTTP callers must send one of these in `X-API-Key` (or `Authorization: Bearer`). Empty: a random key
    is generated at start and written to the log. Env: SGPO_JUDGE__API_KEYS='["key1", "key2"]'."""
    max_request_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    """Larger requests are refused with 413 (HTTP) / RESOURCE_EXHAUSTED (gRPC)."""
    max_items: int = Field(256, ge=1, le=65536)
    """Most responses in one request (a group is G of them); more is 413 / RESOURCE_EXHAUSTED."""
    max_steps: int = Field(512, ge=1)
    """Most steps in one response (given or after splitting); more is 413 / RESOURCE_EXHAUSTED."""
    noise: float = Field(0.0, ge=0.0, le=1.0)
    """Ablation only (the judge-noise study): for this fraction of responses the first error is a random step instead of
    the backend's (sgpo.judge.noise). 0 in any real use."""
    noise_seed: int = 0
    """Seed of the ablation's draws (with the problem and the response's steps)."""
    scoring: ScoringConfig = Field(default_factory=lambda: ScoringConfig())
    """`POST /v1/score_groups` and the OpenRLHF path (sgpo.judge.scoring): the verifier they call, and grouping."""

    @model_validator(mode="after")
    def _check_ports(self) -> JudgeConfig:
        if self.http_enabled and self.http_port and self.http_port in (self.port, self.metrics_port):
            raise ValueError(
                f"http_port {self.http_port} is also the gRPC or metrics port; give each its own port "
                "(or 0 to pick free ones)"
            )
        return self


class ScoringConfig(BaseModel):
    """The group-scoring front (`POST /v1/score_groups`, `POST /v1/openrlhf/reward`, docs/integrations.md): the
    judge verifies each completion with the verifier service over gRPC, judges the wrong answers the
    [algo] color_scope selects, and scores each group with sgpo.core (algo sgpo)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verifier: str = ""
    """The verifier's gRPC address (host:port). Empty: the scoring paths answer 503 saying to set it
    (SGPO_JUDGE__SCORING__VERIFIER=127.0.0.1:50052)."""
    verify_timeout_s: float = Field(60.0, gt=0.0)
    """Deadline of one Verify call (all the completions of a request in one call)."""
    verify_attempts: int = Field(3, ge=1, le=10)
    """Tries of a Verify call that failed with UNAVAILABLE or DEADLINE_EXCEEDED (the verifier restarting)."""
    judge_concurrency: int = Field(4, ge=1, le=256)
    """Groups of one request judged at the same time (each is one call of the backend)."""
    n_samples_per_prompt: int = Field(8, ge=1, le=4096)
    """OpenRLHF path: samples of one prompt that make a group (OpenRLHF's --n_samples_per_prompt). OpenRLHF sends
    each sample in its own request; a request is answered once its group is complete. A request can override it
    with `?n_samples_per_prompt=N` in the URL."""
    group_wait_s: float = Field(120.0, gt=0.0)
    """OpenRLHF path: how long a sample waits for the rest of its group; then the samples that arrived are scored
    as a smaller group (one alone keeps its plain 0/1 reward). Keep it below OpenRLHF's 180 s client timeout."""


JudgeConfig.model_rebuild()
