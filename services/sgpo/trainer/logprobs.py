"""Teacher-forced log-probabilities of given tokens: the trainer's view, also used to check generators.

The generator's sampled-token logprobs and this recomputation must agree (fp32) or the PPO ratio lies.
"""

from __future__ import annotations

from typing import Any


def compute_token_logprobs(model: Any, input_ids: Any, attention_mask: Any, temperature: float = 1.0) -> Any:
    """log p(input_ids[:, t] | input_ids[:, :t]) for t >= 1, shape [batch, seq - 1] (fp32).

    Padding positions get whatever the model computes there; callers mask them out. Temperature divides
    the logits as the sampler did, so that ratios compare the same distribution.
    """
    import torch

    # Positions count real tokens only, as `generate` does, so left padding does not shift them.
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    )
    logits = out.logits[:, :-1]
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, 1:].unsqueeze(-1)
    # log_softmax via logsumexp keeps memory at one [B, T, V] tensor.
    return (torch.gather(logits, -1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)).to(torch.float32)
