"""estimate_peak_memory against the measured peak of a real trainer step (CPU, 151,936-token vocabulary)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgpo.trainer.memory import count_parameters, estimate_peak_memory

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "knobs",
    [{}, {"logprob_chunk_tokens": 128, "gradient_checkpointing": "on"}],
    ids=["default-chunk", "chunk128-checkpointing"],
)
def test_the_estimate_is_within_20_percent_of_a_measured_4k_token_step(knobs: dict[str, object]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.unit.trainer.memory_probe", "4096", "1024", json.dumps(knobs)],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    measured, estimate = out["measured"], out["estimate"]
    assert abs(estimate - measured) <= 0.2 * measured, out


def test_parameter_counts_match_the_models_transformers_builds() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    for cls, cfg in (
        (
            Qwen2ForCausalLM,
            Qwen2Config(
                hidden_size=896,
                intermediate_size=4864,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
                vocab_size=151936,
                tie_word_embeddings=True,
            ),
        ),
        (
            LlamaForCausalLM,
            LlamaConfig(
                hidden_size=256,
                intermediate_size=512,
                num_hidden_layers=3,
                num_attention_heads=8,
                num_key_value_heads=4,
                vocab_size=1000,
            ),
        ),
    ):
        with torch.device("meta"):
            model = cls(cfg)
        assert count_parameters(cfg)[0] == sum(p.numel() for p in model.parameters())


def test_the_estimate_scales_as_expected_and_rejects_bad_input() -> None:
    cfg = {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
        "model_type": "qwen2",
    }
    one = estimate_peak_memory(cfg, 4096, 1, dtype="bf16", gradient_checkpointing=True)
    eight = estimate_peak_memory(cfg, 4096, 1, dtype="bf16", gradient_checkpointing=True, world=8)
    assert eight.optimizer * 8 == pytest.approx(one.optimizer, rel=1e-6) and eight.total < one.total
    small_chunk = estimate_peak_memory(cfg, 4096, 1, chunk_tokens=64)
    assert small_chunk.logits < estimate_peak_memory(cfg, 4096, 1).logits
    assert estimate_peak_memory(cfg, 4096, 1).activations > one.activations  # checkpointing, bf16
    with pytest.raises(ValueError, match="dtype"):
        estimate_peak_memory(cfg, 4096, dtype="fp16")
