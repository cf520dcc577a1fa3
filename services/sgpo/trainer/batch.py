"""From groups to training tensors: one sequence (prompt + completion) per completion, padded micro-batches.

A completion's tokens sit at positions P .. P+C-1 of its sequence (P = prompt length); the teacher-forced
logprob of token t is predicted at position t-1, so the loss mask covers logprob positions P-1 .. P+C-2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sgpo.core.types import Group


@dataclass(frozen=True, slots=True)
class Sample:
    """One completion as a training sequence."""

    group_index: int
    input_ids: tuple[int, ...]
    prompt_len: int
    logp_old: tuple[float, ...]
    advantage: float

    @property
    def completion_len(self) -> int:
        return len(self.input_ids) - self.prompt_len


@dataclass
class MicroBatch:
    input_ids: Any  # [B, L] long
    attention_mask: Any  # [B, L] long
    loss_mask: Any  # [B, L-1] bool: positions whose logprob is a completion token's
    logp_old: Any  # [B, L-1] float32, behaviour logprobs at those positions (0 elsewhere)
    advantages: Any  # [B] float32
    tokens: int  # real (unpadded) tokens in the batch


def check_group(group: Group, vocab_size: int, max_seq_len: int) -> str | None:
    """Why this group cannot be trained (for the dead-letter stream), or None if it can."""
    if not group.prompt_token_ids:
        return "prompt_token_ids is empty; the first completion token needs a prompt to condition on"
    for i, (c, a) in enumerate(zip(group.completions, group.advantages, strict=True)):
        if not math.isfinite(a):
            return f"advantages[{i}] is {a}; advantages must be finite"
        n = len(group.prompt_token_ids) + len(c.token_ids)
        if n > max_seq_len:
            return f"completions[{i}]: prompt + completion is {n} tokens > max_seq_len {max_seq_len}"
        if any(not math.isfinite(lp) for lp in c.logprobs):
            return f"completions[{i}].logprobs has a non-finite value; the behaviour logprobs must be finite"
    ids = [*group.prompt_token_ids, *(t for c in group.completions for t in c.token_ids)]
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        return f"token id {bad[0]} is outside the model's vocabulary [0, {vocab_size}); wrong tokenizer?"
    return None


def build_samples(groups: Sequence[Group]) -> list[Sample]:
    """Every completion with at least one token, in group order."""
    out: list[Sample] = []
    for gi, g in enumerate(groups):
        prompt = tuple(g.prompt_token_ids)
        for c, a in zip(g.completions, g.advantages, strict=True):
            if c.token_ids:
                out.append(Sample(gi, prompt + tuple(c.token_ids), len(prompt), tuple(c.logprobs), float(a)))
    return out


def collate(samples: Sequence[Sample], pad_id: int, device: Any = "cpu") -> MicroBatch:
    """Right-padded tensors for `samples` (positions come from the attention mask, see logprobs.py)."""
    import torch

    length = max(len(s.input_ids) for s in samples)
    b = len(samples)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    loss_mask = torch.zeros((b, length - 1), dtype=torch.bool)
    logp_old = torch.zeros((b, length - 1), dtype=torch.float32)
    for i, s in enumerate(samples):
        n, p = len(s.input_ids), s.prompt_len
        input_ids[i, :n] = torch.tensor(s.input_ids, dtype=torch.long)
        attention[i, :n] = 1
        loss_mask[i, p - 1 : n - 1] = True
        logp_old[i, p - 1 : n - 1] = torch.tensor(s.logp_old, dtype=torch.float32)
    advantages = torch.tensor([s.advantage for s in samples], dtype=torch.float32)
    return MicroBatch(
        input_ids.to(device),
        attention.to(device),
        loss_mask.to(device),
        logp_old.to(device),
        advantages.to(device),
        sum(len(s.input_ids) for s in samples),
    )
