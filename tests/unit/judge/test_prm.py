"""The `prm` backend on CPU with a tiny model built here whose scores are known by construction.

A GPT-2 token classifier with no transformer layers scores each position from its position embedding alone.
We set it so positions before P score ~1 ("correct") and positions from P on score ~0: the first error must
then be exactly the first step whose tag lies at or after P, which checks the backend's tokenization,
step-tag positions, padding and batching against character arithmetic done independently here.
A real PRM (e.g. Qwen2.5-Math-PRM-7B) needs a GPU and a local copy: `test_real_prm_on_gpu`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sgpo.judge.config import JudgeConfig, PrmBackend
from sgpo.judge.judge import build_judge
from sgpo.judge.types import JudgeItem

CHARS = " \n0123456789+-*/=.:?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
P = 40  # positions >= P score as wrong


def build_tiny_prm(path: Path, cutoff: int) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2ForTokenClassification, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(("<pad>", "<unk>", *CHARS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>").save_pretrained(path)
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=256, n_embd=8, n_layer=0, n_head=1, num_labels=2,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    model = GPT2ForTokenClassification(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        wpe = torch.zeros(256, 8)
        wpe[:cutoff, 0], wpe[cutoff:, 0] = 1.0, -1.0
        model.transformer.wpe.weight.copy_(wpe)
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.bias.zero_()
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        model.classifier.weight[1, 0], model.classifier.weight[0, 0] = 1.0, -1.0  # p ≈ 0.995 or 0.005
    model.save_pretrained(path)


@pytest.fixture(scope="module")
def prm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-prm")
    build_tiny_prm(path, P)
    return path


def expected_first_error(problem: str, steps: list[str], tag: str) -> int:
    pos = len(f"{problem}\n\n") - 1  # one token per character, no special tokens
    for k, s in enumerate(steps):
        pos += len(s + tag)
        if pos >= P:
            return k
    return -1


def test_first_step_scored_below_threshold(prm_path: Path) -> None:
    cfg = JudgeConfig(backend=PrmBackend(model_path=prm_path, device="cpu", batch_size=2))
    judge = build_judge(cfg)
    problem = "What is 2 + 3 * 4?"
    responses = [
        ["3 * 4 = 12", "2 + 12 = 14", "answer 14"],  # the second tag crosses P
        ["12", "14"],  # short: every tag before P
        ["first we multiply 3 by 4 to get 12", "then add", "14"],  # the first tag is past P
    ]
    expected = [expected_first_error(problem, r, "\n\n") for r in responses]
    assert expected == [1, -1, 0]  # the construction covers all three cases
    out = judge.judge(problem, "", [JudgeItem(steps=tuple(r)) for r in responses])
    assert [j.first_error_step for j in out] == expected
    assert all(j.status == "ok" and j.backend == "prm" for j in out)
    assert "first step below 0.5: 1" in out[0].reason


def test_threshold_and_too_long_inputs(prm_path: Path) -> None:
    steps = ("3 * 4 = 12", "2 + 12 = 14")
    strict = build_judge(JudgeConfig(backend=PrmBackend(model_path=prm_path, device="cpu", threshold=0.999)))
    (j,) = strict.judge("q", "", [JudgeItem(steps=steps)])
    assert j.first_error_step == 0  # no score reaches 0.999
    short = build_judge(JudgeConfig(backend=PrmBackend(model_path=prm_path, device="cpu", max_length=10)))
    ok, too_long = short.judge("q", "", [JudgeItem(steps=("1",)), JudgeItem(steps=steps)])
    assert ok.status == "ok"
    assert too_long.status == "failed" and "exceeds max_length 10" in too_long.reason


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        build_judge(JudgeConfig(backend=PrmBackend(model_path=tmp_path / "nope")))


@pytest.mark.gpu
def test_real_prm_on_gpu() -> None:
    """Qwen2.5-Math-PRM-7B (or another PRM) from SGPO_TEST_PRM_PATH on a GPU: a clear slip is found."""
    path = os.environ.get("SGPO_TEST_PRM_PATH")
    if not path:
        pytest.skip("needs SGPO_TEST_PRM_PATH: a local Qwen2.5-Math-PRM folder")
    cfg = JudgeConfig(
        backend=PrmBackend(
            model_path=Path(path),
            model_class="auto",
            trust_remote_code=True,
            device="cuda",
            prompt_template=(
                "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}."
                "<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n"
            ),
            step_tag="<extra_0>",
            suffix="<|im_end|><|endoftext|>",
        )
    )
    judge = build_judge(cfg)
    problem = "Tom has 3 boxes of 12 pencils and gives away 5 pencils. How many are left?"
    good = ("Tom has 3 * 12 = 36 pencils.", "After giving away 5, he has 36 - 5 = 31.", "The answer is 31.")
    bad = ("Tom has 3 * 12 = 38 pencils.", "After giving away 5, he has 38 - 5 = 33.", "The answer is 33.")
    g, b = judge.judge(problem, "", [JudgeItem(steps=good), JudgeItem(steps=bad)])
    assert g.first_error_step == -1
    assert b.first_error_step == 0
