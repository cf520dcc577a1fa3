"""The policy loss of docs/design.md §1: the one function every trainer path (one process, FSDP, bench) calls.

Per completion token t with advantage A (the completion's, broadcast over its tokens):
    ratio_t = exp(logp_new_t - logp_old_t)
    pg_t    = -min(ratio_t * A, clip(ratio_t, 1 - clip_eps_low, 1 + clip_eps_high) * A)
    k3_t    = exp(logp_ref_t - logp_new_t) - (logp_ref_t - logp_new_t) - 1      (Schulman's k3 estimator)
    loss_t  = pg_t + kl_coef * k3_t
aggregated as `token_mean` (sum over every completion token of the step / their number) or
`seq_mean_token_mean` (each completion's token mean, then the mean over completions; original GRPO).
The denominators are the whole optimizer step's (`total_tokens`, `total_seqs`), so summing this loss over
micro-batches and data-parallel ranks gives exactly the loss of the full batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sgpo.core.config import AlgoConfig
from sgpo.core.errors import InvalidInputError

# exp() of a larger log-ratio overflows float32 (and inf * 0 advantage is NaN); at this size the clip or the
# optimizer's grad-norm clip decides anyway.
MAX_LOG_RATIO = 20.0


@dataclass
class LossStats:
    """Sums over the masked tokens given (detached), so micro-batches and ranks add up by summation."""

    tokens: Any
    seqs: Any
    pg_sum: Any
    kl_sum: Any
    clipped: Any
    ratio_sum: Any

    def as_tensor(self) -> Any:
        import torch

        return torch.stack([self.tokens, self.seqs, self.pg_sum, self.kl_sum, self.clipped, self.ratio_sum])


def compute_policy_loss(
    logp_new: Any,
    logp_old: Any,
    advantages: Any,
    mask: Any,
    cfg: AlgoConfig,
    logp_ref: Any = None,
    *,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
) -> tuple[Any, LossStats]:
    """Clipped policy-gradient loss plus k3 KL, aggregated per `cfg.loss_agg`.

    logp_new, logp_old, logp_ref, mask: [batch, tokens]; advantages: [batch] (one per completion) or
    [batch, tokens]. `mask` selects completion tokens. `total_tokens` / `total_seqs` are the step's
    completion-token and completion counts (default: those of this call).
    """
    import torch

    if logp_new.shape != logp_old.shape or logp_new.shape != mask.shape:
        raise InvalidInputError(
            "logp_old",
            f"logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape",
        )
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    if cfg.kl_coef > 0 and logp_ref is None:
        raise InvalidInputError("logp_ref", "algo.kl_coef > 0 needs the reference policy's logprobs")
    m = mask.to(logp_new.dtype)
    per_token, pg, kl, ratio, is_clipped = per_token_loss(logp_new, logp_old, advantages, cfg, logp_ref)
    seq_tokens = m.sum(-1)
    has_tokens = seq_tokens > 0
    loss = (per_token * token_coefficients(mask, cfg, total_tokens, total_seqs, logp_new.dtype)).sum()
    with torch.no_grad():
        stats = LossStats(
            tokens=m.sum().detach(),
            seqs=has_tokens.sum().to(m.dtype),
            pg_sum=(pg * m).sum().detach(),
            kl_sum=(kl * m).sum().detach(),
            clipped=(is_clipped.to(m.dtype) * m).sum(),
            ratio_sum=(ratio * m).sum().detach(),
        )
    return loss, stats


def per_token_loss(
    logp_new: Any, logp_old: Any, advantages: Any, cfg: AlgoConfig, logp_ref: Any = None
) -> tuple[Any, Any, Any, Any, Any]:
    """(loss_t, pg_t, k3_t, ratio_t, clipped_t) per token, elementwise (any matching shapes; `advantages`
    broadcast against logp_new). The loss is a sum of loss_t times token_coefficients, so it is separable
    per token: what lets the fused output layer (logprobs.fused_token_loss) form gradients chunk by chunk."""
    import torch

    log_ratio = (logp_new - logp_old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - cfg.clip_eps_low, 1.0 + cfg.clip_eps_high) * advantages
    pg = -torch.minimum(unclipped, clipped)
    per_token = pg
    kl = torch.zeros_like(pg)
    if logp_ref is not None:
        d = (logp_ref - logp_new).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        kl = torch.exp(d) - d - 1.0
        if cfg.kl_coef > 0:
            per_token = pg + cfg.kl_coef * kl
    # The clip is active where the clipped branch is the strictly smaller objective: no gradient flows.
    return per_token, pg, kl, ratio, (clipped < unclipped).detach()


def token_coefficients(
    mask: Any,
    cfg: AlgoConfig,
    total_tokens: float | None = None,
    total_seqs: float | None = None,
    dtype: Any = None,
) -> Any:
    """c [batch, tokens] with loss = sum(loss_t * c): 1 / the step's token count (`token_mean`), or
    1 / (the completion's tokens x the step's completion count) (`seq_mean_token_mean`); 0 outside mask.
    `dtype`: of the result (default float32)."""
    import torch

    m = mask.to(dtype or torch.float32)
    if cfg.loss_agg == "token_mean":
        denom = total_tokens if total_tokens is not None else m.sum().clamp(min=1.0)
        return m / denom
    seq_tokens = m.sum(-1, keepdim=True)
    has_tokens = seq_tokens > 0
    denom = total_seqs if total_seqs is not None else has_tokens.sum().clamp(min=1).to(m.dtype)
    return m / (seq_tokens.clamp(min=1.0) * denom)
