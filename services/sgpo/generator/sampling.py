"""Sampling parameters (vLLM names) and their validation: every bad value is an error naming the field."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.core.errors import InvalidInputError

MAX_STOP_STRINGS = 16


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample: `n` completions per prompt, temperature (0 = greedy), nucleus top-p, a token budget.

    `stop` strings end a completion (the text stops before the stop string; its tokens stay in token_ids);
    `seed` makes a request reproducible: completion j of prompt i draws from its own generator seeded by
    (seed, i, j), so the result does not depend on what else is batched with it.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        validate_sampling(self)


def validate_sampling(p: SamplingParams, max_n: int = 1024, max_tokens_limit: int | None = None) -> None:
    """Raise InvalidInputError naming the first bad field, with what is allowed."""
    if not isinstance(p.n, int) or p.n < 1:
        raise InvalidInputError("sampling.n", f"must be >= 1 completions per prompt; got {p.n}")
    if p.n > max_n:
        raise InvalidInputError("sampling.n", f"must be <= {max_n}; got {p.n}; split the request")
    if not math.isfinite(p.temperature) or p.temperature < 0:
        raise InvalidInputError("sampling.temperature", f"must be >= 0 (0 = greedy); got {p.temperature}")
    if not math.isfinite(p.top_p) or not 0 < p.top_p <= 1:
        raise InvalidInputError(
            "sampling.top_p", f"must be in (0, 1] (1 = no nucleus filtering); got {p.top_p}"
        )
    if not isinstance(p.max_tokens, int) or p.max_tokens < 1:
        raise InvalidInputError("sampling.max_tokens", f"must be >= 1; got {p.max_tokens}")
    if max_tokens_limit is not None and p.max_tokens > max_tokens_limit:
        raise InvalidInputError(
            "sampling.max_tokens", f"must be <= {max_tokens_limit} (the model's context); got {p.max_tokens}"
        )
    if len(p.stop) > MAX_STOP_STRINGS:
        raise InvalidInputError(
            "sampling.stop", f"at most {MAX_STOP_STRINGS} stop strings; got {len(p.stop)}"
        )
    for i, s in enumerate(p.stop):
        if not isinstance(s, str) or not s:
            raise InvalidInputError(f"sampling.stop[{i}]", "must be a non-empty string")
    if p.seed is not None and not (isinstance(p.seed, int) and -(2**63) <= p.seed < 2**63):
        raise InvalidInputError("sampling.seed", f"must be a 64-bit integer or unset; got {p.seed!r}")


def validate_prompts(prompts: Sequence[str], max_prompts: int = 4096) -> None:
    if not prompts:
        raise InvalidInputError("prompts", "needs at least one prompt")
    if len(prompts) > max_prompts:
        raise InvalidInputError("prompts", f"at most {max_prompts} prompts per request; got {len(prompts)}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InvalidInputError(f"prompts[{i}]", f"must be a string; got {type(p).__name__}")
        if not p:
            raise InvalidInputError(f"prompts[{i}]", "is empty; give the text the model should continue")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per-request cost caps every transport enforces before the engine sees the request (GeneratorConfig)."""

    max_n: int = 1024
    max_prompts: int = 4096
    max_completions: int = 16384
    max_request_chars: int = 16 << 20


def check_request(prompts: Sequence[str], params: SamplingParams, limits: RequestLimits) -> None:
    """Raise InvalidInputError naming the field when a request exceeds a cap; cheap (no tokenization)."""
    if params.n > limits.max_n:
        raise InvalidInputError("sampling.n", f"must be <= {limits.max_n} (max_n); got {params.n}")
    validate_prompts(prompts, limits.max_prompts)
    if len(prompts) * params.n > limits.max_completions:
        raise InvalidInputError(
            "sampling.n",
            f"{len(prompts)} prompts x n = {params.n} is {len(prompts) * params.n} completions; at most "
            f"{limits.max_completions} (max_completions) per request: split it",
        )
    total = sum(len(p) for p in prompts)
    if total > limits.max_request_chars:
        raise InvalidInputError(
            "prompts", f"{total} characters in all; at most {limits.max_request_chars} (max_request_chars)"
        )
