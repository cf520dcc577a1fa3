"""Micro-batch plans by token budget, and packed rows whose logprobs equal the padded batch's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sgpo.trainer.batch import Sample, build_samples, collate, collate_packed, plan_micro_batches
from sgpo.trainer.logprobs import compute_token_logprobs
from tests.unit.trainer.fixtures import make_group


def _sample(n: int, prompt: int = 2) -> Sample:
    return Sample(0, tuple(range(4, 4 + n)), prompt, tuple([-1.0] * (n - prompt)), 1.0)


def test_the_plan_fills_micro_batches_up_to_the_token_budget() -> None:
    samples = [_sample(n) for n in (30, 20, 12, 10, 8, 5, 3)]  # longest first, as the engine sorts
    padded = plan_micro_batches(samples, 1, micro_batch_size=99, max_tokens=45)[0]
    assert [[len(s.input_ids) for s in mb] for mb in padded] == [[30], [20, 12], [10, 8, 5, 3]]
    packed = plan_micro_batches(samples, 1, micro_batch_size=99, max_tokens=45, packed=True)[0]
    assert [[len(s.input_ids) for s in mb] for mb in packed] == [[30], [20, 12, 10], [8, 5, 3]]
    assert plan_micro_batches([_sample(50)], 1, 8, max_tokens=40) == [[[_sample(50)]]]  # too long: alone
    by_count = plan_micro_batches(samples, 2, micro_batch_size=2)
    assert [[len(s.input_ids) for s in mb] for mb in by_count[1]] == [[20, 10], [5]]


def _model(arch: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    torch.manual_seed(0)
    shape = dict(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    cfg = LlamaConfig(**shape) if arch == "llama" else Qwen2Config(**shape, tie_word_embeddings=True)
    return AutoModelForCausalLM.from_config(cfg)


@pytest.mark.parametrize("arch", ["tiny", "qwen2"])
def test_packed_rows_give_the_logprobs_of_separate_sequences(arch: str, tiny_policy_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = (
        AutoModelForCausalLM.from_pretrained(tiny_policy_dir) if arch == "tiny" else _model("qwen2")
    ).eval()
    groups = [make_group(f"g{i}", completion_len=(2, 15), prompt_len=3 + i) for i in range(3)]
    samples = sorted(build_samples(groups), key=lambda s: -len(s.input_ids))
    padded, packed = collate(samples, 0), collate_packed(samples, 0)
    assert (
        packed.input_ids.shape == (1, sum(len(s.input_ids) for s in samples))
        and packed.tokens == padded.tokens
    )
    torch.testing.assert_close(packed.loss_mask, padded.loss_mask)
    with torch.no_grad():
        a = compute_token_logprobs(model, padded.input_ids, padded.attention_mask, 0.9, mask=padded.loss_mask)
        rows = compute_token_logprobs(
            model, packed.input_ids, None, 0.9, position_ids=packed.position_ids, mask=packed.row_mask
        )
        b = packed.per_sequence(rows)
    m = padded.loss_mask
    assert int(m.sum()) > 50
    torch.testing.assert_close(b[m], a[m], rtol=0, atol=5e-5)
    # without isolation the packed row would differ: the later sequences would see the earlier ones
    with torch.no_grad():
        leaky = compute_token_logprobs(
            model, packed.input_ids, torch.ones_like(packed.input_ids), 0.9, mask=packed.row_mask
        )
    assert float((packed.per_sequence(leaky)[m] - a[m]).abs().max()) > 1e-3
