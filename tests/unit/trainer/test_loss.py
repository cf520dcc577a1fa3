"""The policy loss (docs/design.md §1) against hand-computed numbers, and its gradient properties."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sgpo.core import AlgoConfig, InvalidInputError
from sgpo.trainer.loss import compute_policy_loss

# Two completions (3 and 2 tokens; the second row padded), advantages +1 and -0.5, clip 0.2 / 0.28.
RATIOS = [[1.5, 0.9, 0.5], [1.2, 0.7, 1.0]]
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
ADV = torch.tensor([1.0, -0.5])
CFG = AlgoConfig(clip_eps_low=0.2, clip_eps_high=0.28)


def _logps() -> tuple[torch.Tensor, torch.Tensor]:
    old = torch.full((2, 3), -1.0, dtype=torch.float64)
    new = old + torch.log(torch.tensor(RATIOS, dtype=torch.float64))
    return new.requires_grad_(True), old


def test_token_mean_matches_the_hand_computed_example() -> None:
    # Per token -min(r*A, clip(r, 0.8, 1.28)*A):
    #   A=+1:   r=1.5 -> -1.28 (clipped), r=0.9 -> -0.9, r=0.5 -> -0.5 (below the floor, but r*A is smaller)
    #   A=-0.5: r=1.2 -> +0.6,  r=0.7 -> -min(-0.35, -0.4) = +0.4 (clipped at the floor)
    new, old = _logps()
    loss, stats = compute_policy_loss(new, old, ADV, MASK, CFG)
    assert loss.item() == pytest.approx((-1.28 - 0.9 - 0.5 + 0.6 + 0.4) / 5, abs=1e-12)
    assert stats.tokens.item() == 5 and stats.seqs.item() == 2
    assert stats.clipped.item() == 2
    assert stats.ratio_sum.item() == pytest.approx(1.5 + 0.9 + 0.5 + 1.2 + 0.7)
    loss.backward()
    # d loss / d logp_new = -A * r / 5 where unclipped, 0 where clipped, 0 on padding.
    expected = torch.tensor([[0.0, -0.9 / 5, -0.5 / 5], [0.5 * 1.2 / 5, 0.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(new.grad, expected, atol=1e-12)


def test_seq_mean_token_mean_matches_the_hand_computed_example() -> None:
    new, old = _logps()
    cfg = CFG.model_copy(update={"loss_agg": "seq_mean_token_mean"})
    loss, _ = compute_policy_loss(new, old, ADV, MASK, cfg)
    assert loss.item() == pytest.approx(((-1.28 - 0.9 - 0.5) / 3 + (0.6 + 0.4) / 2) / 2, abs=1e-12)


def test_k3_kl_term_matches_the_hand_computed_example() -> None:
    new, old = _logps()
    d = torch.tensor([[0.0, math.log(2), -math.log(2)], [0.5, 0.0, 0.0]], dtype=torch.float64)
    ref = new.detach() + d
    cfg = CFG.model_copy(update={"kl_coef": 0.1})
    loss, stats = compute_policy_loss(new, old, ADV, MASK, cfg, ref)
    # k3 = e^d - d - 1 per token: 0, 2 - ln2 - 1, 1/2 + ln2 - 1, e^0.5 - 1.5, 0
    k3 = [0.0, 1 - math.log(2), math.log(2) - 0.5, math.exp(0.5) - 1.5, 0.0]
    assert stats.kl_sum.item() == pytest.approx(sum(k3), abs=1e-12)
    assert loss.item() == pytest.approx(-1.68 / 5 + 0.1 * sum(k3) / 5, abs=1e-12)


def test_step_denominators_make_micro_batch_losses_add_up() -> None:
    torch.manual_seed(0)
    new = torch.randn(6, 7, dtype=torch.float64) - 2
    old = torch.randn(6, 7, dtype=torch.float64) * 0.1 + new
    adv = torch.randn(6, dtype=torch.float64)
    mask = torch.rand(6, 7) < 0.7
    mask[:, 0] = True
    for agg in ("token_mean", "seq_mean_token_mean"):
        cfg = CFG.model_copy(update={"loss_agg": agg})
        full, _ = compute_policy_loss(new, old, adv, mask, cfg)
        total_tokens, total_seqs = float(mask.sum()), 6.0
        parts = sum(
            compute_policy_loss(
                new[i : i + 2],
                old[i : i + 2],
                adv[i : i + 2],
                mask[i : i + 2],
                cfg,
                total_tokens=total_tokens,
                total_seqs=total_seqs,
            )[0]
            for i in (0, 2, 4)
        )
        assert parts.item() == pytest.approx(full.item(), abs=1e-12)


def test_zero_advantages_give_exactly_zero_policy_gradient() -> None:
    """KL off: whatever the ratios (even extreme ones), a zero-advantage batch has loss 0 and gradient 0."""
    torch.manual_seed(1)
    new = (torch.randn(4, 9) * 5).requires_grad_(True)
    old = torch.randn(4, 9) * 5
    mask = torch.ones(4, 9, dtype=torch.bool)
    for agg in ("token_mean", "seq_mean_token_mean"):
        new.grad = None
        loss, _ = compute_policy_loss(
            new, old, torch.zeros(4), mask, CFG.model_copy(update={"loss_agg": agg})
        )
        loss.backward()
        assert loss.item() == 0.0
        assert new.grad is not None and torch.count_nonzero(new.grad) == 0


def test_zero_advantage_batch_gives_zero_gradient_through_the_model(tiny_policy_dir: Path) -> None:
    """The same through the tiny policy: every parameter's gradient is exactly 0 (zero-skipping off)."""
    from transformers import AutoModelForCausalLM

    from sgpo.trainer.batch import build_samples, collate
    from sgpo.trainer.logprobs import compute_token_logprobs
    from tests.unit.trainer.fixtures import make_group

    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir)
    groups = [make_group(f"z{i}", advantages=(0.0, 0.0, 0.0, 0.0), rewards=(0.0,) * 4) for i in range(2)]
    mb = collate(build_samples(groups), pad_id=0)
    logp = compute_token_logprobs(model, mb.input_ids, mb.attention_mask)
    loss, _ = compute_policy_loss(logp, mb.logp_old, mb.advantages, mb.loss_mask, CFG)
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(int(torch.count_nonzero(g)) for g in grads) == 0
    # ...while a non-zero advantage does move them (the check can fail).
    model.zero_grad()
    logp2 = compute_token_logprobs(model, mb.input_ids, mb.attention_mask)
    compute_policy_loss(logp2, mb.logp_old, mb.advantages + 1.0, mb.loss_mask, CFG)[0].backward()
    assert sum(int(torch.count_nonzero(p.grad)) for p in model.parameters()) > 0


def test_bad_inputs_name_the_field() -> None:
    new, old = _logps()
    with pytest.raises(InvalidInputError) as e:
        compute_policy_loss(new, old[:, :2], ADV, MASK, CFG)
    assert e.value.field == "logp_old"
    with pytest.raises(InvalidInputError) as e:
        compute_policy_loss(new, old, ADV, MASK, CFG.model_copy(update={"kl_coef": 0.1}))
    assert e.value.field == "logp_ref"
