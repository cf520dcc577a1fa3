"""Peak memory: a model of it per device (`estimate_peak_memory`) and a CPU measurement to check it against.

The measurement (`peak_rss_above`) resets the kernel's resident-set high-water mark (`/proc/self/clear_refs`,
Linux) and reads it back (`VmHWM`) after the call: the bytes the call added at its peak, whatever
allocated them. glibc keeps freed blocks below its (adaptive) mmap threshold in its heap, so the first
measurement fixes that threshold at 1 MiB for the process: a freed tensor then leaves the resident set and
the high-water mark is the peak of live memory, whatever ran before.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_STATUS = Path("/proc/self/status")


def _status_bytes(key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    if m is None:
        raise RuntimeError(f"/proc/self/status has no {key}; peak RSS is measured on Linux only")
    return int(m.group(1)) * 1024


_MMAP_FIXED = False


def _fix_mmap_threshold() -> None:
    global _MMAP_FIXED
    if _MMAP_FIXED:
        return
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops its adaptation)
    except (OSError, AttributeError):  # not glibc: measure as is
        pass
    _MMAP_FIXED = True


def peak_rss_above(fn: Callable[[], T]) -> tuple[T, int]:
    """(fn(), the peak resident bytes during the call above the resident bytes at its start). Linux only."""
    import gc

    _fix_mmap_threshold()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    start = _status_bytes("VmRSS")
    out = fn()
    return out, _status_bytes("VmHWM") - start


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes per device of one training step, by component (see estimate_peak_memory)."""

    weights: int
    """fp32 master weights (this device's shard), plus compute copies: autocast's bf16 cache in one
    process, or under FSDP the unsharded root (embeddings, head) and two unsharded layers (prefetch)."""
    optimizer: int
    """AdamW's two fp32 moments, sharded."""
    grads: int
    """fp32 gradients (sharded), resident from the end of backward through the optimizer step, plus the
    optimizer's foreach temporaries (one parameter-sized buffer)."""
    activations: int
    """What autograd keeps from forward to backward for the micro-batch (the layers' saved tensors, or
    with gradient checkpointing each layer's input plus one layer recomputed)."""
    logits: int
    """The output layer's working set: [chunk, vocab] fp32 buffers, the head's fp32 weight gradient and
    the final hidden states' gradient (in the chunked logprob backward)."""
    total: int
    """Peak: weights + optimizer + the larger of (activations + logits) and grads."""

    def as_gib(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) / 2**30 for f in fields(self)}


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return cfg.get(name, default) if isinstance(cfg, dict) else getattr(cfg, name, default)


def count_parameters(cfg: Any) -> tuple[int, int, int]:
    """(total, per decoder layer, embeddings + head) parameters of a Llama/Qwen2-style config."""
    h, inter, layers = (
        _get(cfg, "hidden_size"),
        _get(cfg, "intermediate_size"),
        _get(cfg, "num_hidden_layers"),
    )
    vocab = _get(cfg, "vocab_size")
    heads = _get(cfg, "num_attention_heads")
    kv = _get(cfg, "num_key_value_heads") or heads
    head_dim = _get(cfg, "head_dim") or h // heads
    bias = bool(_get(cfg, "attention_bias", False)) or _get(cfg, "model_type") == "qwen2"
    q, kvd = heads * head_dim, kv * head_dim
    attn = h * q + 2 * h * kvd + q * h + ((q + 2 * kvd) if bias else 0)
    layer = attn + 3 * h * inter + 2 * h
    outer = vocab * h * (1 if _get(cfg, "tie_word_embeddings", False) else 2) + h
    return layers * layer + outer, layer, outer


def estimate_peak_memory(
    cfg: Any,
    seq_len: int,
    micro_batch: int = 1,
    *,
    dtype: str = "fp32",
    chunk_tokens: int = 0,
    world: int = 1,
    gradient_checkpointing: bool = False,
    loss_tokens: int | None = None,
) -> MemoryEstimate:
    """Peak memory per device of a trainer step on a Llama/Qwen2-style model (`cfg`: a transformers config
    or its dict), for micro-batches of `micro_batch` sequences of `seq_len` tokens (padded or packed: the
    same token count). `dtype`: the trainer's precision (fp32, or bf16 compute with fp32 master weights);
    `chunk_tokens`: logprob_chunk_tokens (0: the default); `world`: FSDP ranks; `loss_tokens`: positions
    per sequence that go through the output layer (the completion; default all). AdamW, sdpa attention
    (no [seq, seq] score matrix kept). Checked against measured peaks in tests/unit/trainer/test_memory.py.
    """
    from sgpo.trainer.logprobs import chunk_tokens_for

    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype must be 'fp32' or 'bf16', not {dtype!r}")
    if seq_len < 2 or micro_batch < 1 or world < 1:
        raise ValueError("seq_len must be >= 2, micro_batch and world >= 1")
    total_p, layer_p, outer_p = count_parameters(cfg)
    h, inter = _get(cfg, "hidden_size"), _get(cfg, "intermediate_size")
    layers, vocab = _get(cfg, "num_hidden_layers"), _get(cfg, "vocab_size")
    heads = _get(cfg, "num_attention_heads")
    kv = _get(cfg, "num_key_value_heads") or heads
    kvd = kv * (_get(cfg, "head_dim") or h // heads)
    act = 2 if dtype == "bf16" else 4
    tokens = seq_len * micro_batch
    head_tokens = (loss_tokens if loss_tokens is not None else seq_len - 1) * micro_batch

    weights = 4 * total_p // world
    if world > 1:  # unsharded compute copies: the root (kept through backward) and two layers in flight
        weights += act * (outer_p + 2 * layer_p)
    elif dtype == "bf16":  # autocast caches a bf16 copy of each weight it casts during forward
        weights += 2 * total_p
    optimizer = 8 * total_p // world
    grads = 4 * total_p // world + 4 * total_p // world

    # Saved per token per layer: norms' inputs and outputs (4h), q and o_proj's input (2h), k and v (2kvd)
    # and their rotated copies (q, k), attention output (h), MLP: gate, up, silu(gate), product (4 inter).
    per_layer_token = act * (8 * h + 3 * kvd + 4 * inter)
    if gradient_checkpointing:
        activations = tokens * (layers * act * h + per_layer_token)
    else:
        activations = tokens * layers * per_layer_token
    activations += tokens * h * 4 * 2  # the final hidden states and their masked gather (fp32)

    chunk = min(chunk_tokens_for(vocab, chunk_tokens), head_tokens)
    buffers = 2 * chunk * vocab * 4  # forward: logits and p; backward: logits -> gradient, its cast
    logits = buffers + 4 * vocab * h + 4 * head_tokens * h  # head weight gradient, hidden gradient
    if dtype == "bf16":
        logits += 2 * vocab * h  # the head weight cast to bf16 for the chunk matmuls
    total = weights + optimizer + max(activations + logits, grads)
    return MemoryEstimate(weights, optimizer, grads, activations, logits, total)
