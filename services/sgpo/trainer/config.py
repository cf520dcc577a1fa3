"""TrainerConfig: the policy to train, where groups come from, the optimizer, checkpoints and weight publishing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from sgpo.common.settings import ServiceConfig
from sgpo.core.config import AlgoConfig

Precision = Literal["auto", "fp32", "bf16"]
Switch = Literal["auto", "on", "off"]
Device = Literal["auto", "cpu", "cuda"]
LogpOld = Literal["behaviour", "recompute"]
WeightsDtype = Literal["fp32", "bf16"]


class TrainerConfig(ServiceConfig):
    """The trainer service (`sgpo serve trainer`; under `torchrun` for several processes with FSDP)."""

    model_config = SettingsConfigDict(env_prefix="SGPO_TRAINER__", extra="forbid", env_nested_delimiter="__")
    service: ClassVar[str] = "trainer"

    model_path: Path | None = None
    """Local Hugging Face folder of the initial policy (config.json, safetensors, tokenizer). Required."""
    reference_path: Path | None = None
    """Folder of the frozen reference policy for the KL term; defaults to model_path. Loaded only if kl_coef > 0."""
    run_dir: Path = Path("runs/default")
    """Holds checkpoints/step-N/, weights/vN/ and metrics.jsonl. A restart resumes from the latest checkpoint."""
    run_id: str = "default"
    """Names this run's Redis keys (sgpo:{run_id}:...); trainer and orchestrator must agree."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the group queue. A password may be in the URL (`redis://:PASS@host:6379/0`), but prefer
    `redis_password_file` or the `SGPO_REDIS_PASSWORD` environment variable; logs show the URL redacted."""
    redis_password_file: Path | None = None
    """File holding the Redis password (first line); wins over `SGPO_REDIS_PASSWORD`, loses to a password in
    `redis_url`."""
    consumer_group: str = "trainers"
    """Redis consumer group the trainers read through."""
    consumer: str = ""
    """This trainer's consumer name; empty means the host name. Keep it stable across restarts (a StatefulSet
    pod name) so a restarted trainer re-reads the groups it held at once instead of waiting for reclaim."""
    claim_idle_ms: int = Field(60_000, ge=1000)
    """Groups another consumer left unacknowledged for this long are taken over (it is presumed dead)."""
    read_block_ms: int = Field(500, ge=10, le=10_000)
    """Longest wait of one queue read; also how quickly the trainer notices SIGTERM, pause or checkpoint-now."""
    max_entry_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Queue entries larger than this are dead-lettered instead of trained."""

    algo: AlgoConfig = AlgoConfig()
    """The loss knobs (clip_eps_low/high, kl_coef, loss_agg); shared [algo] table with the orchestrator."""
    logp_old: LogpOld = "behaviour"
    """behaviour: the ratio's denominator is the generator's sampled-token logprobs (off-policy correction);
    recompute: the trainer's own logprobs before the update (ratio 1: on-policy GRPO with one update per batch)."""
    temperature: float = Field(1.0, gt=0.0)
    """Sampling temperature the generator's logprobs were computed at; the trainer divides its logits by it."""
    batch_groups: int = Field(8, ge=1)
    """Groups per optimizer step."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward/backward pass (gradient accumulation over the step's micro-batches)."""
    max_tokens_per_micro_batch: int = Field(0, ge=0)
    """When > 0, micro-batches are filled by tokens instead of micro_batch_size: consecutive sequences (longest
    first) while count x longest (or, packed, the sum of lengths) stays within this; a longer sequence goes
    alone. One long completion then no longer sets the cost of seven short ones. The update is unchanged."""
    pack_sequences: bool = False
    """Concatenate each micro-batch's sequences into one row (position ids restart per sequence, attention
    kept within each): no padding at all. Needs an attention implementation that honours packed position ids
    (transformers' sdpa/eager masks and flash-attention do). The update is unchanged."""
    logprob_chunk_tokens: int = Field(0, ge=0)
    """Tokens per chunk of the output layer when computing logprobs (0: 2**26 logits per chunk, 441 tokens
    at a 151,936-token vocabulary); the full [tokens, vocab] logits are never held at once."""
    fused_output_layer: bool = True
    """The loss is a sum of per-token terms, so each logits chunk is turned into its gradients in the forward
    pass (three matmuls per chunk, as a plain output layer; the logits are never recomputed). Off: logprobs
    in chunks, then the loss, with backward recomputing each chunk's logits (four matmuls). The update is the
    same either way (tests); models whose output layer is not a plain linear map take the unfused path."""
    max_seq_len: int = Field(4096, ge=2)
    """Longest prompt + completion in tokens; a group with a longer sequence is dead-lettered with the reason."""
    skip_zero_advantage: bool = True
    """Skip the forward/backward of completions whose advantage is 0 when kl_coef = 0: their loss and gradient
    are exactly 0, so the update is unchanged (they still count in token_mean's denominator)."""

    lr: float = Field(1e-6, gt=0.0)
    """AdamW learning rate (after warm-up)."""
    lr_warmup_steps: int = Field(0, ge=0)
    """Linear warm-up from 0 over this many optimizer steps."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    adam_eps: float = Field(1e-8, gt=0.0)
    """AdamW epsilon."""
    max_grad_norm: float = Field(1.0, ge=0.0)
    """Clip the global gradient norm to this; 0 disables clipping (the norm is still logged)."""
    seed: int = 0
    """Seed of torch, random and numpy (saved and restored with each checkpoint)."""

    device: Device = "auto"
    """auto: cuda if available (the local rank's GPU under torchrun), else cpu."""
    precision: Precision = "auto"
    """auto: bf16 on CUDA, fp32 on CPU. bf16: one process computes under bf16 autocast; under torchrun FSDP2
    gathers bf16 parameters for compute and reduces gradients in fp32. Master weights and optimizer state
    stay fp32 either way."""
    gradient_checkpointing: Switch = "auto"
    """auto: on for CUDA, off on CPU (recompute activations in backward to save memory)."""
    compile: bool = False
    """torch.compile each decoder layer (`module.compile(dynamic=True)`, in place: state-dict keys unchanged;
    under torchrun after FSDP2 wraps it, as torchtitan does). The first step pays the compilation (about a
    minute on a CPU for the tiny policy; cached under /tmp/torchinductor_<user> for the next start); then the
    layers' elementwise work runs fused: 1.37x the eager step's CPU time on the tiny policy (bench/NOTES.md).
    The output layer stays eager (the fused head already avoids its logits)."""
    torch_threads: int = Field(0, ge=0)
    """CPU threads for torch; 0 keeps torch's default."""

    max_steps: int = Field(0, ge=0)
    """Stop (after a final checkpoint) once this many optimizer steps are done; 0 trains until SIGTERM."""
    checkpoint_every: int = Field(10, ge=1)
    """Write a checkpoint every this many steps; groups are acknowledged only once it is durable."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept on disk; older ones are deleted after a new one is durable."""
    keep_every: int = Field(0, ge=0)
    """Checkpoints of steps that are multiples of this are never deleted (0: none): a learning curve's."""
    publish_every: int = Field(1, ge=1)
    """Publish weights (run_dir/weights/v{step}/) every this many steps."""
    pause_every: int = Field(0, ge=0)
    """Pause after every step that is a multiple of this (0: never) until a Resume call: `sgpo train` sets it
    to its evaluation interval, so no evaluation is skipped when training outpaces the launcher."""
    publish_dtype: WeightsDtype = "fp32"
    """dtype of the published weights (weights/vN/, what the generator loads): bf16 halves the bytes gathered
    to rank 0 and written each publish. Checkpoints keep the fp32 master weights, so a resume is exact."""
    async_publish: bool = False
    """Write weights/vN/ and call UpdateWeights on a background thread: the next step starts while the
    generator loads them. At most one publish is in flight (the next waits for it), and policy_version is
    recorded only once the generator has the weights, so the staleness bound still holds."""
    keep_weights: int = Field(3, ge=1)
    """Published weight folders kept; a generator may still be loading an older one."""
    generator_target: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """host:port of the generator's gRPC server, or of each replica (a list, or one comma-separated string):
    every publish calls UpdateWeights on all of them at once, and the policy version is recorded once each has
    answered. Empty: publish to disk and Redis only."""
    replica_check_s: float = Field(2.0, gt=0.0)
    """Every this many seconds, ask each generator replica its policy version and send the newest weights to
    one that holds older ones (it restarted, or was down during a publish)."""
    update_weights_timeout_s: float = Field(300.0, gt=0.0)
    """Deadline of one UpdateWeights call; a failure is logged and counted, training goes on."""

    @field_validator("model_path", "reference_path")
    @classmethod
    def _is_model_folder(cls, v: Path | None) -> Path | None:
        if v is not None and not (v / "config.json").is_file():
            raise ValueError(
                f"{v} is not a Hugging Face model folder (no config.json); point it at a local folder written "
                "by save_pretrained (e.g. the tiny policy from `sgpo pretrain`)"
            )
        return v

    @field_validator("generator_target", mode="before")
    @classmethod
    def _split_targets(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [t.strip() for t in v.split(",") if t.strip()]
        return v

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if len(set(self.generator_target)) != len(self.generator_target):
            raise ValueError(f"generator_target lists a replica twice: {self.generator_target}")
        if self.algo.kl_coef == 0.0 and self.reference_path is not None:
            raise ValueError(
                "reference_path is set but algo.kl_coef = 0, so the reference would never be used; "
                "set algo.kl_coef > 0 or drop reference_path"
            )
        if not 0.0 < self.adam_betas[0] < 1.0 or not 0.0 < self.adam_betas[1] < 1.0:
            raise ValueError(f"adam_betas must both be in (0, 1); got {self.adam_betas}")
        return self

    def require_model(self) -> Path:
        """The model folder, or a ValueError saying how to set it."""
        if self.model_path is None:
            raise ValueError(
                "model_path is not set: set [trainer] model_path in the config file or SGPO_TRAINER__MODEL_PATH "
                "to a local Hugging Face model folder"
            )
        return self.model_path
