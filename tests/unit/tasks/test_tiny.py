"""The tiny policy builder: HF-loadable, deterministic, character tokenizer with pad/eos/bos."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from sgpo.tasks.arith import format_prompt
from sgpo.tasks.tiny import TINY_PRESET, TinyPreset, build_tiny_policy, policy_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", seed=0)


def test_loads_with_auto_classes(tiny: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (tiny / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert tok.pad_token == "<pad>" and tok.eos_token == "<eos>" and tok.bos_token == "<bos>"
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n_params < 2e6, n_params


def test_tokenizer_is_character_level_and_round_trips(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    text = format_prompt("Start with 7. Add 5.") + "Step 1: 7 + 5 = 12\nAnswer: 12"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode([*ids, tok.eos_token_id], skip_special_tokens=True) == text


def test_same_seed_same_weights_other_seed_differs(tmp_path: Path) -> None:
    a = build_tiny_policy(tmp_path / "a", seed=3)
    b = build_tiny_policy(tmp_path / "b", seed=3)
    c = build_tiny_policy(tmp_path / "c", seed=4)
    wa, wb, wc = ((p / "model.safetensors").read_bytes() for p in (a, b, c))
    assert wa == wb
    assert wa != wc


def test_policy_dir_is_keyed_by_preset_hash(tmp_path: Path) -> None:
    other = TINY_PRESET.with_iters(TINY_PRESET.sft_iters + 1)
    assert policy_dir(TINY_PRESET, tmp_path) == policy_dir(TinyPreset(), tmp_path)
    assert policy_dir(other, tmp_path) != policy_dir(TINY_PRESET, tmp_path)
    assert policy_dir(TINY_PRESET, tmp_path).parent.parent == tmp_path


def test_with_iters_scales_the_curriculum() -> None:
    small = TINY_PRESET.with_iters(10)
    assert small.sft_iters == 10
    assert [ph.steps for ph in small.sft_phases] == [ph.steps for ph in TINY_PRESET.sft_phases]
    assert small.sft_steps == TINY_PRESET.sft_steps


def test_presets_rl_levels_reach_past_the_sft_range() -> None:
    assert max(TINY_PRESET.rl_steps) > max(TINY_PRESET.sft_steps)
    assert set(TINY_PRESET.rl_steps) <= set(TINY_PRESET.eval_steps)


def test_rl_levels_do_not_change_the_cache_key() -> None:
    assert replace(TINY_PRESET, rl_steps=(7,)).digest() == TINY_PRESET.digest()
    assert replace(TINY_PRESET, eval_per_level=3).digest() != TINY_PRESET.digest()
    assert replace(TINY_PRESET, slip_prob=0.0).digest() != TINY_PRESET.digest()
