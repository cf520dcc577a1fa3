"""Teacher-forced log-probabilities of given tokens: the trainer's view, also used to check generators.

The generator's sampled-token logprobs and this recomputation must agree (fp32) or the PPO ratio lies.

The model's final hidden states go through the output layer a chunk of tokens at a time
(`_ChunkedTokenLogprob`): each chunk's logits are computed, reduced to one logprob (and entropy) per token
and dropped; backward recomputes them chunk by chunk. Peak memory grows with the chunk, not with
length x vocabulary (at 151,936 tokens of vocabulary a 4k-token sequence has 2.5 GB of fp32 logits, and
the full path kept several copies of them alive through backward). `compute_token_logprobs_full` is the
plain full-logits computation, kept as the reference the tests compare against.
"""

from __future__ import annotations

from typing import Any

# Elements of one chunk's [tokens, vocab] logits (fp32: 256 MiB): 441 tokens at vocab 151,936; a small
# vocabulary fits a whole micro-batch in one chunk, so no Python loop overhead where memory is no issue.
DEFAULT_CHUNK_ELEMENTS = 2**26


def chunk_tokens_for(vocab_size: int, chunk_tokens: int = 0) -> int:
    """Tokens per logits chunk: `chunk_tokens` if set, else DEFAULT_CHUNK_ELEMENTS / vocab (at least 16)."""
    if chunk_tokens > 0:
        return chunk_tokens
    return max(16, DEFAULT_CHUNK_ELEMENTS // max(vocab_size, 1))


def position_ids_from_mask(attention_mask: Any) -> Any:
    # Positions count real tokens only, as `generate` does, so left padding does not shift them.
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def compute_token_logprobs_full(
    model: Any, input_ids: Any, attention_mask: Any, temperature: float = 1.0, position_ids: Any = None
) -> Any:
    """The reference: full [batch, seq, vocab] logits, log-softmax, gather; shape [batch, seq - 1] (fp32)."""
    import torch

    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    logits = out.logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:].unsqueeze(-1)
    return (torch.gather(logits, -1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)).to(torch.float32)


def _compute_dtype(hidden: Any) -> Any:
    import torch

    dev = hidden.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return hidden.dtype


def _chunk_logits(h: Any, weight: Any, bias: Any, inv_temp: float, dtype: Any) -> Any:
    """fp32 logits / T of one chunk, the matmul in `dtype` (the autocast dtype, as nn.Linear would)."""
    logits = (h.to(dtype) @ weight.to(dtype).t()).float()
    if bias is not None:
        logits += bias.float()
    if inv_temp != 1.0:
        logits *= inv_temp
    return logits


def _make_function() -> Any:
    import torch

    class ChunkedTokenLogprob(torch.autograd.Function):
        """logp[n] = log softmax(hidden[n] @ W.T + b)[target[n]] / T, chunk by chunk; entropy as a metric.

        Saved for backward: the hidden states, the weight and one fp32 logsumexp per token; never the logits.
        """

        @staticmethod
        def forward(  # type: ignore[override]
            ctx: Any,
            hidden: Any,
            weight: Any,
            bias: Any,
            targets: Any,
            inv_temp: float,
            chunk: int,
            with_entropy: bool,
        ) -> Any:
            n = hidden.shape[0]
            dtype = _compute_dtype(hidden)
            logp = torch.empty(n, dtype=torch.float32, device=hidden.device)
            lse = torch.empty(n, dtype=torch.float32, device=hidden.device)
            entropy = torch.zeros(n if with_entropy else 0, dtype=torch.float32, device=hidden.device)
            with torch.autocast(hidden.device.type, enabled=False):
                for s in range(0, n, chunk):
                    e = min(s + chunk, n)
                    logits = _chunk_logits(hidden[s:e], weight, bias, inv_temp, dtype)
                    lse[s:e] = torch.logsumexp(logits, dim=-1)
                    logp[s:e] = logits.gather(-1, targets[s:e, None]).squeeze(-1) - lse[s:e]
                    if with_entropy:
                        # H = lse - sum_v p_v logits_v: one more [chunk, vocab] buffer (p), the sum a batched dot
                        p = (logits - lse[s:e, None]).exp_()
                        entropy[s:e] = lse[s:e] - torch.einsum("nv,nv->n", p, logits)
                        del p
                    del logits
            ctx.save_for_backward(hidden, weight, bias, targets, lse)
            ctx.inv_temp, ctx.chunk, ctx.dtype = inv_temp, chunk, dtype
            ctx.mark_non_differentiable(entropy)
            return logp, entropy

        @staticmethod
        def backward(ctx: Any, grad_logp: Any, _grad_entropy: Any) -> Any:  # type: ignore[override]
            hidden, weight, bias, targets, lse = ctx.saved_tensors
            inv_temp, chunk, dtype = ctx.inv_temp, ctx.chunk, ctx.dtype
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            n = hidden.shape[0]
            rows = torch.arange(min(chunk, n), device=hidden.device)
            with torch.autocast(hidden.device.type, enabled=False):
                for s in range(0, n, chunk):
                    e = min(s + chunk, n)
                    g_out = grad_logp[s:e].float()
                    # d logp / d logits = (onehot(target) - softmax) / T, scaled by the incoming gradient
                    g = _chunk_logits(hidden[s:e], weight, bias, inv_temp, dtype)
                    g.sub_(lse[s:e, None]).exp_().mul_(-g_out[:, None])
                    g[rows[: e - s], targets[s:e]] += g_out
                    if inv_temp != 1.0:
                        g *= inv_temp
                    if need_b:
                        grad_b += g.sum(0)
                    gd = g.to(dtype)
                    del g
                    if need_h:
                        grad_h[s:e] = (gd @ weight.to(dtype)).to(hidden.dtype)
                    if need_w:
                        grad_w += (gd.t() @ hidden[s:e].to(dtype)).float()
            return (
                grad_h,
                grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None,
                None,
                None,
                None,
                None,
            )

    return ChunkedTokenLogprob


_FUNCTION: Any = None


def chunked_token_logprobs(
    hidden: Any,
    weight: Any,
    bias: Any,
    targets: Any,
    temperature: float = 1.0,
    chunk_tokens: int = 0,
    with_entropy: bool = False,
) -> tuple[Any, Any]:
    """(logp [N], entropy [N] or empty) of `targets` [N] under softmax((hidden [N, H] @ weight.T + bias) / T).

    Differentiable in hidden, weight and bias (entropy is a detached metric)."""
    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _make_function()
    chunk = chunk_tokens_for(int(weight.shape[0]), chunk_tokens)
    logp, entropy = _FUNCTION.apply(hidden, weight, bias, targets, 1.0 / temperature, chunk, with_entropy)
    return logp, entropy


def _make_fused_function() -> Any:
    import torch

    class FusedTokenLoss(torch.autograd.Function):
        """loss = sum_n token_loss(logp[n]) with logp[n] = log softmax(hidden[n] @ W.T + b)[target[n]] / T.

        The loss is a sum of per-token terms, so each chunk's gradient is known as soon as its logits are:
        d loss / d logits = token_loss'(logp) (onehot - softmax) / T. Forward computes the chunk's logits
        once and turns them straight into the hidden states' and the weight's gradients (three matmuls per
        chunk, as a plain output layer's forward and backward; ChunkedTokenLogprob recomputes the logits in
        backward: four). Saved for backward: those gradients, scaled there by the incoming one.
        """

        @staticmethod
        def forward(  # type: ignore[override]
            ctx: Any,
            hidden: Any,
            weight: Any,
            bias: Any,
            targets: Any,
            inv_temp: float,
            chunk: int,
            with_entropy: bool,
            token_loss: Any,
        ) -> Any:
            n = hidden.shape[0]
            dev = hidden.device
            dtype = _compute_dtype(hidden)
            need_h, need_w, need_b = ctx.needs_input_grad[:3]
            logp = torch.empty(n, dtype=torch.float32, device=dev)
            entropy = torch.zeros(n if with_entropy else 0, dtype=torch.float32, device=dev)
            loss = torch.zeros((), dtype=torch.float32, device=dev)
            grad_h = torch.empty_like(hidden) if need_h else None
            grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
            grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
            rows = torch.arange(min(chunk, n), device=dev)
            with torch.autocast(dev.type, enabled=False):
                for s in range(0, n, chunk):
                    e = min(s + chunk, n)
                    logits = _chunk_logits(hidden[s:e], weight, bias, inv_temp, dtype)
                    lse = torch.logsumexp(logits, dim=-1)
                    lp = logits.gather(-1, targets[s:e, None]).squeeze(-1) - lse
                    logp[s:e] = lp
                    if with_entropy:
                        # H = lse - sum_v p_v logits_v: a second [chunk, vocab] buffer (p) while both live
                        p = (logits - lse[:, None]).exp_()
                        entropy[s:e] = lse - torch.einsum("nv,nv->n", p, logits)
                        del logits
                    else:
                        p = logits.sub_(lse[:, None]).exp_()  # the softmax, in the logits' buffer
                    with torch.enable_grad():
                        x = lp.detach().requires_grad_()
                        chunk_loss = token_loss(x, s, e)
                        (g_out,) = torch.autograd.grad(chunk_loss, x)
                    loss += chunk_loss.detach()
                    g = p.mul_(-g_out[:, None])
                    g[rows[: e - s], targets[s:e]] += g_out
                    if inv_temp != 1.0:
                        g *= inv_temp
                    if need_b:
                        grad_b += g.sum(0)
                    gd = g.to(dtype)
                    del g, p
                    if need_h:
                        grad_h[s:e] = (gd @ weight.to(dtype)).to(hidden.dtype)
                    if need_w:
                        grad_w += (gd.t() @ hidden[s:e].to(dtype)).float()
                    del gd
            ctx.save_for_backward(
                grad_h,
                grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None,
            )
            ctx.mark_non_differentiable(logp, entropy)
            return loss, logp, entropy

        @staticmethod
        def backward(ctx: Any, grad_loss: Any, _g_logp: Any, _g_entropy: Any) -> Any:  # type: ignore[override]
            grad_h, grad_w, grad_b = ctx.saved_tensors
            scale = grad_loss.float()
            return (
                None if grad_h is None else grad_h * scale.to(grad_h.dtype),
                None if grad_w is None else grad_w * scale.to(grad_w.dtype),
                None if grad_b is None else grad_b * scale.to(grad_b.dtype),
                None,
                None,
                None,
                None,
                None,
            )

    return FusedTokenLoss


_FUSED: Any = None


def fused_token_loss(
    hidden: Any,
    weight: Any,
    bias: Any,
    targets: Any,
    token_loss: Any,
    temperature: float = 1.0,
    chunk_tokens: int = 0,
    with_entropy: bool = False,
) -> tuple[Any, Any, Any]:
    """(loss, logp [N], entropy [N] or empty): loss = sum over chunks of `token_loss(logp[s:e], s, e)`, a
    differentiable function of the chunk's logprobs that is a sum of per-token terms (the policy loss is:
    loss.per_token_loss x loss.token_coefficients). Differentiable in hidden, weight and bias through the
    loss; logp and entropy are detached. The [N, vocab] logits never exist, nor are they recomputed."""
    global _FUSED
    if _FUSED is None:
        _FUSED = _make_fused_function()
    chunk = chunk_tokens_for(int(weight.shape[0]), chunk_tokens)
    loss, logp, entropy = _FUSED.apply(
        hidden, weight, bias, targets, 1.0 / temperature, chunk, with_entropy, token_loss
    )
    return loss, logp, entropy


def _output_layer(model: Any) -> Any:
    """The model's lm_head if logits are a plain linear map of the final hidden states, else None."""
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    cfg = getattr(model, "config", None)
    plain = (
        isinstance(head, torch.nn.Linear)
        and not getattr(cfg, "final_logit_softcapping", None)
        and getattr(cfg, "logit_scale", None) in (None, 1.0)
    )
    return head if plain else None


def compute_token_logprobs(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    temperature: float = 1.0,
    *,
    position_ids: Any = None,
    mask: Any = None,
    chunk_tokens: int = 0,
    with_entropy: bool = False,
) -> Any:
    """log p(input_ids[:, t] | input_ids[:, :t]) for t >= 1, shape [batch, seq - 1] (fp32).

    Padding positions get whatever the model computes there, or 0 outside `mask` ([batch, seq - 1] bool:
    only those positions go through the output layer); callers mask them out. Temperature divides the
    logits as the sampler did, so that ratios compare the same distribution. `position_ids` default to the
    count of real tokens; packed rows pass their own (and no attention mask), see batch.py.
    With `with_entropy`, returns (logp, entropy) with the entropy (nats, detached) of each position's
    softmax(logits / T). `chunk_tokens`: tokens per logits chunk (0: chunk_tokens_for's default).
    """

    head = _output_layer(model)
    if head is None:  # an unusual output layer (soft-capping, scaling): the full-logits path
        if with_entropy:
            raise ValueError(
                f"{type(model).__name__}'s logits are not a plain linear map of its hidden states; "
                "the entropy metric needs one"
            )
        logp = compute_token_logprobs_full(model, input_ids, attention_mask, temperature, position_ids)
        return logp if mask is None else logp * mask
    flat_h, flat_t = _final_hidden(model, input_ids, attention_mask, position_ids, mask)
    logp, entropy = chunked_token_logprobs(
        flat_h, head.weight, head.bias, flat_t, temperature, chunk_tokens, with_entropy
    )
    logp_bt = _unflatten(logp, input_ids, mask)
    ent_bt = _unflatten(entropy, input_ids, mask) if with_entropy else None
    return (logp_bt, ent_bt) if with_entropy else logp_bt


def _final_hidden(
    model: Any, input_ids: Any, attention_mask: Any, position_ids: Any, mask: Any
) -> tuple[Any, Any]:
    """(hidden [N, H], targets [N]) of the positions in `mask` (all if None), row-major: the final hidden
    states that predict input_ids[:, 1:], without the model computing more than one position's logits."""
    if position_ids is None:
        position_ids = position_ids_from_mask(attention_mask)
    # logits_to_keep=1: the model computes one position's logits; the rest go through the chunks.
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=False,
        output_hidden_states=True,
        logits_to_keep=1,
    )
    hidden = out.hidden_states[-1][:, :-1]
    targets = input_ids[:, 1:]
    if mask is None:
        b, t = targets.shape
        return hidden.reshape(b * t, -1), targets.reshape(b * t)
    return hidden[mask], targets[mask]


def _unflatten(values: Any, input_ids: Any, mask: Any) -> Any:
    """[N] values of _final_hidden's positions -> [batch, seq - 1] (0 outside `mask`)."""
    import torch

    b, t = input_ids.shape[0], input_ids.shape[1] - 1
    if mask is None:
        return values.view(b, t)
    return torch.zeros((b, t), dtype=torch.float32, device=values.device).masked_scatter(mask, values)


def compute_token_loss_fused(
    model: Any,
    input_ids: Any,
    token_loss: Any,
    temperature: float = 1.0,
    *,
    position_ids: Any = None,
    mask: Any = None,
    chunk_tokens: int = 0,
    with_entropy: bool = False,
) -> tuple[Any, Any, Any] | None:
    """(loss, logp, entropy) with the output layer's gradient formed in the forward pass (fused_token_loss):
    `token_loss(logp_chunk, start, end)` is the loss of the positions start:end of `mask`'s positions in
    row-major order, a sum of per-token terms. logp and entropy: [N] in that order, detached (entropy empty
    without `with_entropy`). None if the model's output layer is not a plain linear map (the caller then
    takes compute_token_logprobs)."""
    head = _output_layer(model)
    if head is None:
        return None
    flat_h, flat_t = _final_hidden(model, input_ids, None, position_ids, mask)
    return fused_token_loss(
        flat_h, head.weight, head.bias, flat_t, token_loss, temperature, chunk_tokens, with_entropy
    )
