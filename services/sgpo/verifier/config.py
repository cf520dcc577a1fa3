"""VerifierConfig: the verifier service's settings (`[verifier]` in the TOML file, `SGPO_VERIFIER__*` env)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from sgpo.common.settings import ServiceConfig
from sgpo.verifier.extract import Fallback


class VerifierConfig(ServiceConfig):
    """How answers are extracted and compared, and how the symbolic workers are bounded."""

    model_config = SettingsConfigDict(
        env_prefix="SGPO_VERIFIER__", extra="forbid", env_nested_delimiter="__", validate_default=True
    )
    service: ClassVar[str] = "verifier"

    workers: int = Field(2, ge=1, le=64)
    """Worker processes for symbolic checks (math-verify/sympy); about one per free core."""
    deadline_s: float = Field(5.0, gt=0.0, le=600.0)
    """Default per-item budget for a symbolic check; past it the worker is killed and the item is unscorable."""
    fallback: Fallback = "math_verify"
    """When a response has no box, `####`, `Answer:` or "the answer is": math_verify (its own extraction
    reads the text), last_number (the last number in the text), or none (unscorable)."""
    float_rounding: int = Field(6, ge=0, le=15)
    """Decimals kept when a decimal is compared with another number (0.333333 equals 1/3 at 6)."""
    strict: bool = True
    """math-verify strict mode: variable names matter and sets are not tuples."""
    allow_set_relation_comp: bool = False
    """math-verify: let an interval gold match an inequality answer (`[-2,7]` vs `-2 <= x <= 7`)."""
    scan_chars: int = Field(50_000, ge=1_000, le=10_000_000)
    """Only the last this-many characters of a response are searched for its answer."""
    max_answer_chars: int = Field(2_000, ge=10, le=100_000)
    """An extracted answer (or a gold answer) longer than this is unscorable instead of parsed."""
    max_batch_items: int = Field(10_000, ge=1)
    """Most items one Verify call may carry."""
    grpc_max_receive_bytes: int = Field(16 << 20, ge=1 << 16, le=1 << 30)
    """Largest Verify request; gRPC refuses a bigger message (RESOURCE_EXHAUSTED) from its length prefix,
    before reading it. 16 MiB holds a group of long chains of thought many times over."""
    worker_memory_mb: int = Field(1024, ge=0)
    """Address-space limit of each worker in MiB (0: none); a worker that hits it is replaced."""
    worker_max_tasks: int = Field(5_000, ge=1)
    """A worker is replaced after this many checks, so sympy's caches cannot grow without bound."""

    @model_validator(mode="after")
    def _check(self) -> VerifierConfig:
        if 0 < self.worker_memory_mb < 256:
            raise ValueError(
                f"worker_memory_mb={self.worker_memory_mb} is too small for sympy to import; "
                "use at least 256 or 0 for no limit"
            )
        if self.max_answer_chars > self.scan_chars:
            raise ValueError(
                f"max_answer_chars ({self.max_answer_chars}) cannot exceed scan_chars ({self.scan_chars}); "
                "raise scan_chars or lower max_answer_chars"
            )
        return self
