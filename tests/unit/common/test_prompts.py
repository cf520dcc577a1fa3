"""The one prompt renderer: plain templates, chat templates with a system instruction, stop strings, bad input.

Chat rendering runs on the tiny chat policy's real tokenizer (a byte-level BPE with a ChatML template, built in
about a second), the shape of Qwen2.5's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sgpo.common.prompts import BOXED_INSTRUCTION, PromptConfig, PromptError, build_prompter

PROBLEM = "Start with 7. Add 5. Subtract 3."


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat policy's tokenizer, saved as a model folder holds it."""
    from sgpo.tasks.chat import build_chat_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    build_chat_tokenizer().save_pretrained(folder)
    return folder


def test_plain_is_the_template_with_the_problem_and_keeps_other_braces() -> None:
    assert build_prompter(PromptConfig()).render(PROBLEM) == f"{PROBLEM}\n"
    cfg = PromptConfig(template=f"{{problem}}\n{BOXED_INSTRUCTION}\n")
    assert (
        build_prompter(cfg).render("1+1?")
        == "1+1?\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
    )
    assert build_prompter(PromptConfig()).stop == ()  # no tokenizer: nothing is added to the stop strings


def test_chat_renders_the_tokenizers_template_with_the_system_instruction(chat_tokenizer: Path) -> None:
    cfg = PromptConfig(format="chat", system=BOXED_INSTRUCTION, tokenizer=str(chat_tokenizer))
    prompter = build_prompter(cfg)
    assert prompter.render(PROBLEM) == (
        f"<|im_start|>system\n{BOXED_INSTRUCTION}<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_system = build_prompter(cfg.model_copy(update={"system": None}))
    assert no_system.render(PROBLEM) == f"<|im_start|>user\n{PROBLEM}<|im_end|>\n<|im_start|>assistant\n"
    # the end of turn is the EOS; the end of text is the other end-of-turn marker the vocabulary has
    assert prompter.stop == ("<|im_end|>", "<|endoftext|>")
    vocab = prompter.tokenizer.get_vocab()
    assert prompter.stop_token_ids == (vocab["<|im_end|>"], vocab["<|endoftext|>"])
    assert prompter.with_stop(["\n\n", "<|im_end|>"]) == ["\n\n", "<|im_end|>", "<|endoftext|>"]
    off = build_prompter(cfg.model_copy(update={"stop_from_tokenizer": False}))
    assert off.stop == () and off.render(PROBLEM) == prompter.render(PROBLEM)


def test_a_template_without_a_system_role_gets_the_instruction_in_the_user_turn(chat_tokenizer: Path) -> None:
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(chat_tokenizer)
    # Gemma's way: a template that raises on a system message
    tok.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    prompter = build_prompter(PromptConfig(format="chat", system="Think."), tok)
    assert prompter.render("1+1?") == "<start_of_turn>user\n1+1?\nThink.<end_of_turn>\n<start_of_turn>model\n"


def test_a_chat_template_user_message_template(chat_tokenizer: Path) -> None:
    cfg = PromptConfig(format="chat", template="Problem: {problem}", tokenizer=str(chat_tokenizer))
    assert "<|im_start|>user\nProblem: 1+1?<|im_end|>" in build_prompter(cfg).render("1+1?")


def test_bad_configs_say_how_to_fix_them(chat_tokenizer: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"must contain \{problem\}"):
        PromptConfig(template="Q: {question}")
    with pytest.raises(ValidationError, match="chat format only"):
        PromptConfig(system="Think.")
    with pytest.raises(ValidationError, match="format"):
        PromptConfig(format="markdown")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="extra"):
        PromptConfig(instruction="Think.")  # type: ignore[call-arg]
    with pytest.raises(PromptError, match="needs the policy's tokenizer"):
        build_prompter(PromptConfig(format="chat"))
    with pytest.raises(PromptError, match="cannot load the tokenizer"):
        build_prompter(PromptConfig(format="chat", tokenizer=str(tmp_path / "missing")))
    from transformers import AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(chat_tokenizer)
    tok.chat_template = None
    with pytest.raises(PromptError, match="has no chat template"):
        build_prompter(PromptConfig(format="chat"), tok)
