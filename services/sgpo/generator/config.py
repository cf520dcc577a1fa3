"""GeneratorConfig: which model and engine serve completions, and the HTTP (OpenAI-compatible) surface.

    [generator]
    model = "tiny"            # the pretrained tiny policy (pretrained on first use), or a HF folder / hub id
    engine = "hf"             # or "vllm" (GPU, `pip install sgpo[vllm]`)
    http_port = 8000

Environment: `SGPO_GENERATOR__MODEL=/path/to/policy SGPO_GENERATOR__ENGINE=vllm`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

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
    """Backend: `hf` (transformers, CPU or GPU) or `vllm` (GPU, in-process async engine)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """hf engine: where the model runs (`auto`: CUDA when available)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights and activations (`auto`: float32 on CPU, bfloat16 on GPU). Logprob checks need float32."""
    max_batch_size: int = Field(256, ge=1, le=65536)
    """hf engine: at most this many sequences decode together (rows of concurrent requests are merged)."""
    batch_wait_s: float = Field(0.005, ge=0.0, le=1.0)
    """hf engine: how long the scheduler waits for more requests to join a batch that is not full."""
    max_model_len: int | None = Field(None, ge=16)
    """Context length cap (prompt + completion); default: the model's own."""
    max_n: int = Field(1024, ge=1)
    """Largest `n` (completions per prompt) one request may ask for."""
    policy_version: int = Field(0, ge=0)
    """Version reported for the weights loaded at start (the trainer's UpdateWeights raises it)."""
    threads: int | None = Field(None, ge=1)
    """hf engine on CPU: torch threads (default: torch's choice)."""
    http_enabled: bool = True
    """Serve the OpenAI-compatible HTTP API (/v1/completions, /v1/chat/completions, /v1/models)."""
    http_port: int = Field(0, ge=0, le=65535)
    """HTTP port; 0 picks a free one (printed at start)."""
    api_key: SecretStr | None = None
    """When set, HTTP callers must send `Authorization: Bearer <key>` (as with `vllm serve --api-key`)."""
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    """vllm engine: fraction of GPU memory vLLM may take."""
    tensor_parallel_size: int = Field(1, ge=1)
    """vllm engine: GPUs per model replica."""
    trust_remote_code: bool = False
    """Allow model folders that ship their own modelling code."""

    @model_validator(mode="after")
    def _check(self) -> GeneratorConfig:
        if self.engine == "vllm" and self.device == "cpu":
            raise ValueError(
                "engine 'vllm' runs on GPUs; set device = 'auto' or 'cuda', or use engine = 'hf' on CPU"
            )
        if self.engine == "vllm" and self.threads is not None:
            raise ValueError("threads applies to the hf engine on CPU; unset it for engine = 'vllm'")
        if not self.model.strip():
            raise ValueError("model is empty; give 'tiny', 'tiny-random', a HF folder or a hub id")
        return self
