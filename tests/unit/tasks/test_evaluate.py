"""`sgpo eval` pieces: prompt formats, over-long prompts, reproducibility (the CLI end to end is in tests/e2e)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgpo.cli import main
from sgpo.tasks.evaluate import INSTRUCTION, build_prompter, is_tiny_policy, prompt_style
from tests.support import SHARED_DATA


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny architecture as a run checkpoint holds it: weights and tokenizer, no pretrain.json."""
    from sgpo.tasks.tiny import build_tiny_policy

    return build_tiny_policy(tmp_path_factory.mktemp("ckpt") / "step-1", seed=0)


def test_tiny_policy_is_detected_without_pretrain_json(tiny_checkpoint: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert not (tiny_checkpoint / "pretrain.json").exists()
    assert is_tiny_policy(tiny_checkpoint, tok)
    assert prompt_style("auto", tiny_checkpoint, tok) == "tiny"
    tok.chat_template = "{{ messages[0]['content'] }}"
    assert not is_tiny_policy(tiny_checkpoint, tok)
    assert prompt_style("auto", tiny_checkpoint, tok) == "chat"
    tok.chat_template = None
    assert prompt_style("auto", tiny_checkpoint, tok) == "plain"
    assert prompt_style("Q: {problem}\nA:", tiny_checkpoint, tok) == "custom"


def test_prompt_formats(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from sgpo.tasks.chat import build_chat_tokenizer

    tiny = AutoTokenizer.from_pretrained(tiny_checkpoint)
    assert build_prompter("tiny", "auto", tiny_checkpoint, tiny).render("Start with 3. Add 4.") == (
        "Start with 3. Add 4.\n"
    )
    assert build_prompter("custom", "Q: {problem}\nA:", tiny_checkpoint, tiny).render("1+1?") == "Q: 1+1?\nA:"
    assert build_prompter("plain", "auto", tiny_checkpoint, tiny).render("1+1?") == f"1+1?\n{INSTRUCTION}\n"
    chat = build_chat_tokenizer()  # a ChatML template, as Qwen2.5's
    assert build_prompter("chat", "auto", tmp_path, chat).render("1+1?") == (
        f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    )
    chat.chat_template = (  # Gemma's way: no system role
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    assert build_prompter("chat", "auto", tmp_path, chat).render("1+1?") == f"1+1?\n{INSTRUCTION}"


def _eval(tiny_checkpoint: Path, out: Path, *extra: str) -> dict[str, object]:
    argv = ["eval", "--model", str(tiny_checkpoint), "--k", "2", "--max-tokens", "8", "--threads", "1"]
    argv += ["--verifier-workers", "1", "--no-progress", "--data-dir", str(SHARED_DATA), "--out", str(out)]
    assert main([*argv, *extra]) == 0
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_prompts_longer_than_the_context_are_counted_not_sampled(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    result = _eval(
        tiny_checkpoint,
        tmp_path / "r.json",
        "--benchmarks",
        "gsm8k,arith",
        "--limit",
        "1",
        "--max-model-len",
        "200",
    )
    gsm8k, arith = result["results"]["gsm8k"], result["results"]["arith"]  # type: ignore[index]
    assert gsm8k["prompt_too_long"] == 1 and gsm8k["avg@2"] == 0.0 and gsm8k["problems"] == 1
    assert arith["prompt_too_long"] == 0
    records = [json.loads(x) for x in (tmp_path / "r.items.jsonl").read_text().splitlines()]
    too_long = [r for r in records if r["prompt_too_long"]]
    assert [r["benchmark"] for r in too_long] == ["gsm8k"]
    assert "context of 200 tokens" in too_long[0]["reasons"][0]


def test_same_seed_same_samples(tiny_checkpoint: Path, tmp_path: Path) -> None:
    args = ("--benchmarks", "arith", "--limit", "1", "--temperature", "1.0", "--save-completions")
    _eval(tiny_checkpoint, tmp_path / "a.json", *args)
    _eval(tiny_checkpoint, tmp_path / "b.json", *args)
    _eval(tiny_checkpoint, tmp_path / "c.json", *args, "--seed", "1")
    a, b, c = ((tmp_path / f"{x}.items.jsonl").read_text().splitlines() for x in "abc")
    completions = [[json.loads(line)["completions"] for line in x] for x in (a, b, c)]
    assert completions[0] == completions[1]
    assert completions[0] != completions[2]
