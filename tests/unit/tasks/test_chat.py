"""The tiny chat policy: a real byte-level BPE tokenizer with a ChatML template, a Qwen2 model folder, and its
SFT in the chat format (a few iterations here; the full recipe's accuracy table is the slow test)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sgpo.tasks.chat import (
    CHAT_PRESET,
    CHAT_SYSTEM,
    CHATML_TEMPLATE,
    PRESETS,
    build_chat_policy,
    build_chat_tokenizer,
    policy_prompt,
)
from sgpo.tasks.pretrain import pretrain

SMALL = replace(CHAT_PRESET.with_iters(3), batch_size=8, eval_steps=(1, 2), eval_per_level=3)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_chat_policy(tmp_path_factory.mktemp("chat") / "policy")


def test_tokenizer_is_a_deterministic_byte_level_bpe(tmp_path: Path) -> None:
    a, b = build_chat_tokenizer(), build_chat_tokenizer()
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (
        tmp_path / "b" / "tokenizer.json"
    ).read_bytes()
    vocab = a.get_vocab()
    assert 259 < len(vocab) <= CHAT_PRESET.vocab_size  # 256 bytes, 3 specials, merges learned on the task
    assert a.convert_ids_to_tokens(a("Step 12: 7 + 5 = 12")["input_ids"])[:4] == ["Step", "Ġ", "1", "2"]
    for text in (
        "Start with 7. Add 5.",
        "∫ x² dx = ½ — Ünïcödé, \\boxed{3}",
    ):  # any byte sequence round-trips
        assert a.decode(a(text)["input_ids"]) == text
    assert (a.eos_token, a.pad_token, a.bos_token) == ("<|im_end|>", "<|endoftext|>", None)


def test_policy_folder_is_a_qwen2_with_a_chatml_template(policy: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.num_key_value_heads == 2 and model.config.num_hidden_layers == 2
    assert tok.chat_template == CHATML_TEMPLATE
    vocab = tok.get_vocab()
    assert model.generation_config.eos_token_id == [vocab["<|im_end|>"], vocab["<|endoftext|>"]]
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    found = policy_prompt(policy)  # a checkpoint without pretrain.json: recognised by its template
    assert found is not None and found.format == "chat" and found.system == CHAT_SYSTEM


def test_sft_in_the_chat_format_is_deterministic_and_records_its_prompt(tmp_path: Path) -> None:
    a = pretrain(SMALL, tmp_path / "a", progress=False, threads=1)
    b = pretrain(SMALL, tmp_path / "b", progress=False, threads=1)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()
    assert a["final_loss"] == b["final_loss"] and a["accuracy"] == b["accuracy"]
    assert a["prompt"] == {"format": "chat", "system": CHAT_SYSTEM}
    record = json.loads((tmp_path / "a" / "pretrain.json").read_text())
    assert record["preset"]["name"] == "tiny-chat" and record["digest"] == SMALL.digest()
    found = policy_prompt(tmp_path / "a")
    assert found is not None and found.tokenizer == str(tmp_path / "a")


def test_the_presets_are_registered_and_keyed_apart() -> None:
    assert set(PRESETS) == {"tiny", "tiny-chat"}
    assert PRESETS["tiny-chat"].digest() != PRESETS["tiny"].digest()
    assert replace(CHAT_PRESET, system="Think.").digest() != CHAT_PRESET.digest()


@pytest.mark.slow
def test_full_chat_recipe_solves_short_chains_and_leaves_long_ones_to_rl(tmp_path: Path) -> None:
    """The bar of issue 15: a useful, non-trivial policy. Short chains are mostly solved greedily; the longest RL
    level mostly is not, so RL sees mixed groups and all-negative groups to color."""
    record = pretrain(CHAT_PRESET, tmp_path / "tiny-chat", progress=False, threads=2)
    acc = {int(k): v for k, v in record["accuracy"].items()}
    assert acc[1] >= 0.5, acc
    assert acc[max(CHAT_PRESET.rl_steps)] <= 0.3, acc


def test_the_package_ships_the_current_chat_preset(tmp_path: Path) -> None:
    from sgpo.tasks.tiny import SHIPPED_POLICIES, ensure_tiny_policy, file_sha256, shipped_policy

    name = f"tiny-chat-{CHAT_PRESET.digest()}"
    assert name in SHIPPED_POLICIES, (
        "CHAT_PRESET changed: run `sgpo pretrain --preset tiny-chat`, copy the cache folder into "
        "sgpo/tasks/policies/ and record its model.safetensors sha256 in SHIPPED_POLICIES"
    )
    folder = shipped_policy(CHAT_PRESET)
    assert folder is not None
    record = json.loads((folder / "pretrain.json").read_text())
    assert record["prompt"] == {"format": "chat", "system": CHAT_SYSTEM}
    installed = ensure_tiny_policy(tmp_path, preset=CHAT_PRESET, progress=False)  # copied, not pretrained
    assert file_sha256(installed / "model.safetensors") == SHIPPED_POLICIES[name]
    acc = {int(k): v for k, v in record["accuracy"].items()}
    assert acc[1] >= 0.5 and acc[max(CHAT_PRESET.rl_steps)] <= 0.3, acc  # the slow test's bar
