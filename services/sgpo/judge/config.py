"""JudgeConfig: which backend locates first errors, the coloring defaults, and the serving limits.

The backend is a union keyed by its `type` field (`symbolic | llm | prm | cascade`), so a TOML file reads

    [judge.backend]
    type = "llm"
    base_url = "http://127.0.0.1:8000/v1"

and the environment `SGPO_JUDGE__BACKEND__TYPE=llm SGPO_JUDGE__BACKEND__BASE_URL=...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from sgpo.common.http import HttpLimits
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


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
# Request fields the backend sets itself: extra_body may not override them (set the field named instead).
MANAGED_FIELDS: dict[str, str] = {
    "model": "model",
    "messages": "(the critique prompt is built by the judge)",
    "temperature": "temperature",
    "max_tokens": "max_tokens",
    "max_completion_tokens": 'max_tokens (sent as max_completion_tokens by profile = "reasoning")',
    "reasoning_effort": "reasoning_effort",
    "stream": "(the judge reads whole replies)",
    "n": "(one critique per request)",
}


class LlmBackend(BaseModel):
    """Any OpenAI-compatible chat endpoint (a vLLM server with a large judge model, OpenAI's API, the policy's
    own generator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["llm"] = "llm"
    """Backend selector."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """Endpoint root; the backend POSTs to `{base_url}/chat/completions`."""
    model: str = "judge"
    """Model name sent in each request (vLLM's served model name)."""
    api_key: SecretStr | None = None
    """Sent as `Authorization: Bearer <key>` when set."""
    profile: Literal["chat", "reasoning"] = "chat"
    """Which request fields the endpoint accepts. chat: `temperature` and `max_tokens` (vLLM, DeepSeek-V3,
    Qwen, GPT-4o). reasoning: `max_completion_tokens` and optionally `reasoning_effort`, never `temperature`
    (OpenAI's o-series and gpt-5 models answer HTTP 400 to `temperature` and `max_tokens`)."""
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    """Sampling temperature (chat profile only; unset: 0, greedy and reproducible). The reasoning profile
    rejects it at start-up: those endpoints accept only their default."""
    max_tokens: int = Field(4096, ge=16)
    """Completion budget of one critique: `max_tokens` (chat) or `max_completion_tokens` (reasoning, where it
    also pays for the hidden reasoning: give a reasoning model 16k or more)."""
    reasoning_effort: ReasoningEffort | None = None
    """Reasoning profile only: how long the model thinks (`low` is cheaper; unset: the endpoint's default)."""
    extra_body: dict[str, Any] = Field(default_factory=dict)
    """More request fields sent as they are (e.g. `{"top_k": 1}`, `{"chat_template_kwargs": {"enable_thinking":
    false}}` for vLLM, `{"seed": 0}`). May not set a field the profile manages (model, messages, temperature,
    max_tokens, max_completion_tokens, reasoning_effort, stream, n). Env: a JSON object."""
    max_concurrency: int = Field(8, ge=1, le=1024)
    """At most this many requests in flight to the endpoint, over all callers of this judge."""
    timeout_s: float = Field(120.0, gt=0.0)
    """Read timeout of one request (a long critique from a large model takes a while)."""
    connect_timeout_s: float = Field(5.0, gt=0.0)
    """Connect timeout of one request."""
    response_budget_s: float = Field(300.0, gt=0.0)
    """Wall-clock budget of one response's critique: rate-limit waits, attempts and backoff together. No
    attempt starts past it and the last one is cut to what is left. The orchestrator's deadline for a Judge
    call is derived from the same number (its judge_response_budget_s): keep the two equal."""
    max_retries: int = Field(3, ge=0, le=20)
    """Retries after a timeout, a connection error, HTTP 429 or 5xx (not after other 4xx or a bad reply)."""
    backoff_s: float = Field(0.5, ge=0.0)
    """First retry waits about this long; each further retry doubles it (with jitter)."""
    backoff_max_s: float = Field(10.0, ge=0.0)
    """Cap of one backoff wait."""
    max_requests_per_minute: float = Field(0.0, ge=0.0)
    """Requests sent per minute by this judge replica, at most (token bucket, bursts of one second's worth);
    0: no limit. With R replicas give each 1/R of the endpoint's limit."""
    max_tokens_per_minute: float = Field(0.0, ge=0.0)
    """Prompt plus completion tokens per minute by this replica, at most; a request is admitted on an estimate
    (prompt characters / 4) and the reply's `usage` settles the difference. 0: no limit."""
    price_prompt_per_mtok: float = Field(0.0, ge=0.0)
    """Price of one million prompt tokens (e.g. USD); with the completion price it makes the cost metric
    `sgpo_judge_llm_cost_total` and the run summary's judge cost. 0: cost not reported."""
    price_completion_per_mtok: float = Field(0.0, ge=0.0)
    """Price of one million completion tokens (reasoning tokens included, as endpoints bill them)."""
    cache_size: int = Field(10_000, ge=0)
    """Parsed answers kept in memory, keyed by the request's digest; 0 disables the in-memory cache."""
    cache_redis_url: str | None = None
    """Also keep parsed answers in this Redis (`redis://host:6379/0`), shared by every replica and surviving
    restarts: keys `sgpo:judge_cache:{model}:{sha256 of the request}`. Unset: memory only."""
    cache_ttl_s: int = Field(30 * 24 * 3600, ge=60)
    """Lifetime of a Redis cache entry."""
    include_reference: bool = True
    """Show the reference solution to the judge model when the request has one."""
    prompt_template: str | None = None
    """The critique prompt, with `{problem}`, `{reference}` (a "[Reference Solution]" block, or empty) and
    `{tagged_response}` (the `<paragraph_i>` blocks); literal braces doubled. Unset: ProcessBench's critique
    template (sgpo.judge.llm.CRITIQUE_TEMPLATE), which the published judge F1 figures use."""

    @model_validator(mode="after")
    def _check_profile(self) -> LlmBackend:
        if self.prompt_template is not None:
            try:
                self.prompt_template.format(problem="", reference="", tagged_response="")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(
                    f"prompt_template does not format with {{problem}}, {{reference}} and {{tagged_response}} "
                    f"({type(e).__name__}: {e}); double literal braces ({{{{ }}}})"
                ) from None
            if "{tagged_response}" not in self.prompt_template:
                raise ValueError("prompt_template must contain {tagged_response} (the response's paragraphs)")
        if self.profile == "reasoning" and self.temperature is not None:
            raise ValueError(
                f'profile = "reasoning" sends no temperature (reasoning endpoints such as o4-mini answer HTTP '
                f'400 to it); got temperature = {self.temperature}: remove it, or use profile = "chat"'
            )
        if self.profile == "chat" and self.reasoning_effort is not None:
            raise ValueError(
                f'reasoning_effort = {self.reasoning_effort!r} needs profile = "reasoning" (chat endpoints '
                'reject or ignore it); set profile = "reasoning" or remove reasoning_effort'
            )
        for key in self.extra_body:
            if key in MANAGED_FIELDS:
                where = MANAGED_FIELDS[key]
                fix = f"set {where} instead" if not where.startswith("(") else f"remove it {where}"
                raise ValueError(f"extra_body sets {key!r}, which the {self.profile} profile manages: {fix}")
        return self

    def request_fields(self) -> dict[str, Any]:
        """The profile's decoding fields plus extra_body: everything of a request but model and messages."""
        if self.profile == "reasoning":
            fields: dict[str, Any] = {"max_completion_tokens": self.max_tokens}
            if self.reasoning_effort is not None:
                fields["reasoning_effort"] = self.reasoning_effort
        else:
            fields = {
                "temperature": 0.0 if self.temperature is None else self.temperature,
                "max_tokens": self.max_tokens,
            }
        return {**fields, **self.extra_body}


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
    """HTTP callers must send one of these in `X-API-Key` (or `Authorization: Bearer`). Env:
    SGPO_JUDGE__API_KEYS='["key1", "key2"]'. Neither this nor `api_keys_file`: a random key is generated at
    start into a 0600 file whose path is logged (the key itself never is)."""
    api_keys_file: str | None = None
    """File of HTTP API keys, one per line (a mounted secret), accepted besides `api_keys`."""
    max_request_bytes: int = Field(1 << 20, ge=1024, le=64 << 20)
    """Larger requests are refused with 413 (HTTP) / RESOURCE_EXHAUSTED (gRPC); it is also the gRPC transport's
    receive limit (plus 64 KiB of framing), so a bigger message is refused from its length prefix, unread."""
    http_limits: HttpLimits = Field(default_factory=lambda: HttpLimits(max_active=4))
    """HTTP timeouts, connections and admission (`[judge.http_limits]`, sgpo.common.http.HttpLimits; the body
    limit is `max_request_bytes`). `max_active` = 4: the symbolic backend is CPU-bound; 1 gives the tightest
    tail at half the throughput, 4 to 16 about the same as no limit (bench/NOTES.md, "Load")."""
    max_items: int = Field(256, ge=1, le=65536)
    """Most responses in one request (a group is G of them); more is 413 / RESOURCE_EXHAUSTED."""
    max_steps: int = Field(512, ge=1)
    """Most steps in one response (given or after splitting); more is 413 / RESOURCE_EXHAUSTED."""
    step_min_chars: int = Field(0, ge=0)
    """Long chains of thought: a step (after splitting a response) shorter than this many characters is merged
    into the next one (0: off). Display math always stays with the sentence before it. See docs/judge.md for
    the step counts this gives on MATH-500, OlympiadBench and ProcessBench."""
    step_cap: int = Field(0, ge=0)
    """At most this many steps per response (after splitting), made by merging neighbours into steps of about
    equal length (0: no cap). The judge's first-error index, and rts in steps, are in these steps."""
    noise: float = Field(0.0, ge=0.0, le=1.0)
    """Ablation only (the judge-noise study): for this fraction of responses the first error is a random step instead of
    the backend's (sgpo.judge.noise). 0 in any real use."""
    noise_seed: int = 0
    """Seed of the ablation's draws (with the problem and the response's steps)."""
    scoring: ScoringConfig = Field(default_factory=lambda: ScoringConfig())
    """`POST /v1/score_groups` and the OpenRLHF path (sgpo.judge.scoring): the verifier they call, and grouping."""

    @model_validator(mode="before")
    @classmethod
    def _llm_table_for_llm(cls, data: Any) -> Any:
        """`type = "llm"` also reads the cascade's spelling of its fields (`[judge.backend.llm]`,
        `SGPO_JUDGE__BACKEND__LLM__BASE_URL`), under its own: one set of variables (docker-compose.yml,
        secrets.env) points either backend at the endpoint."""
        backend = data.get("backend") if isinstance(data, dict) else None
        if (
            isinstance(backend, dict)
            and backend.get("type") == "llm"
            and isinstance(backend.get("llm"), dict)
        ):
            own = {k: v for k, v in backend.items() if k != "llm"}
            data = {**data, "backend": {**backend["llm"], **own}}
        return data

    @property
    def grpc_max_receive_bytes(self) -> int:
        return self.max_request_bytes + (64 << 10)

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
