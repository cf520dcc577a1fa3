"""Pieces every engine shares: incremental detokenization, stop-string search, weight-file resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sgpo.generator.engine import (
    IncrementalDetokenizer,
    WeightsRejectedError,
    encode_prompt,
    find_stop,
    weight_files,
)

CORPUS = [
    "Step 1: 7 + 5 = 12\nAnswer: 12",
    "café naïve résumé — déjà vu",
    "数学 问题 的 答案 是 四十二",
    "emoji 🙂🚀 and more 🙂 text",
    "   leading spaces and\ttabs\n\nnewlines",
]


@pytest.fixture(scope="module")
def bpe() -> Any:
    """A byte-level BPE tokenizer (GPT-2 / Qwen style) trained here: multi-byte characters span tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 3, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", clean_up_tokenization_spaces=False
    )


@pytest.mark.parametrize("text", CORPUS)
def test_incremental_text_equals_full_decode_and_starts_point_at_tokens(bpe: Any, text: str) -> None:
    prompt = bpe("Q: ")["input_ids"]
    ids = bpe(text)["input_ids"]
    detok = IncrementalDetokenizer(bpe, prompt)
    for t in ids:
        detok.add(t)
    assert detok.text == bpe.decode(ids)
    assert len(detok.starts) == len(ids)
    assert detok.starts == sorted(detok.starts)
    # Every token's text (where it decodes alone to whole characters) sits at its start offset.
    for t, s in zip(ids, detok.starts, strict=True):
        piece = bpe.decode([t])
        if "\ufffd" not in piece:
            assert detok.text[s : s + len(piece)] == piece


def test_partial_utf8_emits_nothing_until_complete(bpe: Any) -> None:
    ids = bpe("🙂")["input_ids"]
    assert len(ids) > 1, "the emoji's 4 bytes span several byte-level tokens"
    detok = IncrementalDetokenizer(bpe, [])
    deltas = [detok.add(t) for t in ids]
    assert deltas[:-1] == [""] * (len(ids) - 1)
    assert deltas[-1] == "🙂"
    assert detok.starts == [0] * len(ids)


def test_eos_adds_no_text(bpe: Any) -> None:
    detok = IncrementalDetokenizer(bpe, [])
    for t in bpe("ab")["input_ids"]:
        detok.add(t)
    assert detok.add(bpe.eos_token_id) == ""
    assert detok.text == "ab"
    assert detok.starts[-1] == 2


def test_find_stop_finds_the_earliest_stop_in_the_new_text() -> None:
    assert find_stop("abc\n\nxyz", ["\n\n"], 5) == 3
    assert find_stop("abc\n\nxyz", ["\n\n"], 3) == -1  # the stop ended before the new characters
    assert find_stop("abXYcd", ["cd", "XY"], 4) == 2
    assert find_stop("abc", [], 3) == -1
    # A stop string split across two tokens is found once its last piece arrives.
    assert find_stop("Answer: 4", ["er: 4"], 1) == 4


def test_encode_prompt_does_not_double_bos(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from sgpo.tasks.tiny import build_tiny_policy

    tok = AutoTokenizer.from_pretrained(build_tiny_policy(tmp_path / "p"))
    assert encode_prompt(tok, "ab") == [tok.bos_token_id, *tok("ab", add_special_tokens=False)["input_ids"]]
    assert encode_prompt(tok, "<bos>ab") == encode_prompt(tok, "ab")


def test_weight_files_resolution(tmp_path: Path) -> None:
    single = tmp_path / "single"
    single.mkdir()
    (single / "model.safetensors").write_bytes(b"x")
    assert weight_files(str(single)) == [single / "model.safetensors"]
    assert weight_files(f"file://{single}") == [single / "model.safetensors"]
    assert weight_files(str(single / "model.safetensors")) == [single / "model.safetensors"]
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    for n in names:
        (sharded / n).write_bytes(b"x")
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": names[1], "b": names[0], "c": names[1]}})
    )
    assert weight_files(str(sharded)) == [sharded / n for n in names]
    for bad, needle in [
        ("", "empty"),
        (str(tmp_path / "nope"), "does not exist"),
        (str(tmp_path), "neither model.safetensors"),
        (str(sharded / "model.safetensors.index.json"), "not a .safetensors file"),
    ]:
        with pytest.raises(WeightsRejectedError, match=needle):
            weight_files(bad)
    (sharded / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(WeightsRejectedError, match="not a safetensors index"):
        weight_files(str(sharded))
