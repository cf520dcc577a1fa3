"""From groups to training tensors: one sequence (prompt + completion) per completion, micro-batches.

A completion's tokens sit at positions P .. P+C-1 of its sequence (P = prompt length); the teacher-forced
logprob of token t is predicted at position t-1, so the loss mask covers logprob positions P-1 .. P+C-2.

Micro-batches (`plan_micro_batches`) hold `micro_batch_size` sequences, or with `max_tokens` as many as fit
that many tokens (padded: rows x the micro-batch's longest; packed: the sum of lengths). Each is padded to
its own longest sequence (`collate`) or packed into one row (`collate_packed`): the sequences are
concatenated, position ids restart at 0 for each, and no attention mask is passed, so the model's masking
(transformers' packed-sequence detection) keeps each sequence from attending to the others. Either way the
loss sees the same per-sequence [batch, length - 1] tensors.
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
    input_ids: Any  # [R, T] long: one row per sequence (padded), or one packed row
    attention_mask: Any  # [R, T] long, or None for a packed row
    loss_mask: Any  # [B, L-1] bool: per sequence, positions whose logprob is a completion token's
    logp_old: Any  # [B, L-1] float32, behaviour logprobs at those positions (0 elsewhere)
    advantages: Any  # [B] float32
    tokens: int  # real (unpadded) tokens in the batch
    position_ids: Any = None  # [R, T] long; None: counted from the attention mask
    row_mask: Any = None  # [R, T-1] bool: positions of input_ids whose logprob is needed (loss_mask if None)
    unpack: Any = None  # [B, L-1] long: index into row-major [R, T-1] logprobs of each sequence's position

    @property
    def logprob_mask(self) -> Any:
        return self.loss_mask if self.row_mask is None else self.row_mask

    def flat(self, seq_values: Any) -> Any:
        """[B, L-1] (or broadcastable [B, 1]) per-sequence values -> [N] at the loss positions, in the order
        the logprob positions of the rows come in (row-major over logprob_mask: packed rows hold the
        sequences in order, so both layouts list them alike)."""
        return seq_values.expand(self.loss_mask.shape)[self.loss_mask]

    def unflat(self, values: Any) -> Any:
        """The inverse of flat: [N] -> [B, L-1], 0 outside loss_mask."""
        import torch

        out = torch.zeros(self.loss_mask.shape, dtype=values.dtype, device=values.device)
        return out.masked_scatter(self.loss_mask, values)

    def per_sequence(self, row_values: Any) -> Any:
        """[R, T-1] values at input_ids' positions -> [B, L-1] per sequence (0 outside loss_mask)."""
        if self.unpack is None:
            return row_values
        return row_values.reshape(-1)[self.unpack] * self.loss_mask


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


def plan_micro_batches(
    samples: Sequence[Sample], world: int, micro_batch_size: int, max_tokens: int = 0, packed: bool = False
) -> list[list[list[Sample]]]:
    """Each rank's micro-batches: rank r trains samples[r::world] (sorted longest first by the caller).

    Without `max_tokens`, `micro_batch_size` sequences each. With it, consecutive sequences while their cost
    stays within `max_tokens` (padded: count x the first's, i.e. the longest, length; packed: the sum of
    lengths); a sequence longer than the budget goes alone. Deterministic: every rank computes every plan.
    """
    plans: list[list[list[Sample]]] = []
    for rank in range(world):
        local = list(samples[rank::world])
        if max_tokens <= 0:
            plans.append([local[i : i + micro_batch_size] for i in range(0, len(local), micro_batch_size)])
            continue
        mbs: list[list[Sample]] = []
        cur: list[Sample] = []
        used = 0
        for s in local:
            n = len(s.input_ids)
            cost = used + n if packed else (len(cur) + 1) * max(n, len(cur[0].input_ids) if cur else 0)
            if cur and cost > max_tokens:
                mbs.append(cur)
                cur, used = [], 0
            cur.append(s)
            used += n
        if cur:
            mbs.append(cur)
        plans.append(mbs)
    return plans


def collate_packed(samples: Sequence[Sample], pad_id: int, device: Any = "cpu") -> MicroBatch:
    """`samples` concatenated into one row, position ids restarting per sequence, no attention mask."""
    import torch

    del pad_id  # nothing is padded in the row; the per-sequence tensors pad with masked zeros
    base = collate(samples, 0, "cpu")
    total = sum(len(s.input_ids) for s in samples)
    ids: list[int] = []
    pos: list[int] = []
    row_mask = torch.zeros((1, total - 1), dtype=torch.bool)
    unpack = torch.zeros(base.loss_mask.shape, dtype=torch.long)
    offset = 0
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids.extend(s.input_ids)
        pos.extend(range(n))
        row_mask[0, offset + s.prompt_len - 1 : offset + n - 1] = True
        unpack[i, : n - 1] = torch.arange(offset, offset + n - 1)
        offset += n
    return MicroBatch(
        input_ids=torch.tensor([ids], dtype=torch.long).to(device),
        attention_mask=None,
        loss_mask=base.loss_mask.to(device),
        logp_old=base.logp_old.to(device),
        advantages=base.advantages.to(device),
        tokens=total,
        position_ids=torch.tensor([pos], dtype=torch.long).to(device),
        row_mask=row_mask.to(device),
        unpack=unpack.to(device),
    )
