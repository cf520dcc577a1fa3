"""Prompt parity on the tiny chat policy (a real Qwen2 folder with a BPE tokenizer and a ChatML template): the
orchestrator of `sgpo train` and of `sgpo record` (the run config built for the policy, loaded as the services
load it), the held-out evaluation during training, `sgpo eval` and the SFT that made the policy render a problem
into the same text, with the same stop strings. (tests/integration/test_orchestrator.py checks that the text
reaches the generator.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import tomli_w

from sgpo.common.settings import load_config
from sgpo.launch.evaluate import run_prompter
from sgpo.launch.presets import TRAIN_PRESETS
from sgpo.launch.train import TrainOptions, build_run_config
from sgpo.orchestrator.config import OrchestratorConfig
from sgpo.orchestrator.loop import Orchestrator
from sgpo.tasks.chat import CHAT_PRESET, CHAT_SYSTEM, build_chat_policy
from sgpo.tasks.evaluate import build_prompter, prompt_style
from sgpo.tasks.pretrain import renderer

PROBLEM = "Start with 7. Add 5. Subtract 3."
EXPECTED = f"<|im_start|>system\n{CHAT_SYSTEM}<|im_end|>\n<|im_start|>user\n{PROBLEM}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def chat_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat policy as a run checkpoint holds it (random weights, no pretrain.json)."""
    return build_chat_policy(tmp_path_factory.mktemp("chat") / "policy")


class _Sink:
    def put(self, group: object) -> None:
        raise AssertionError("nothing is sampled here")


def _orchestrator_config(policy: Path, run_dir: Path) -> tuple[OrchestratorConfig, dict[str, object]]:
    """The run config `sgpo train` and `sgpo record` write for `policy`, loaded the way the orchestrator loads it."""
    train = run_dir / "train.jsonl"
    train.write_text('{"problem": "Start with 1. Add 1.", "answer": "2"}\n')
    ports = {n: (1, 2) for n in ("verifier", "judge", "generator", "trainer", "orchestrator")}
    doc = build_run_config(
        TRAIN_PRESETS["tiny"], TrainOptions(), run_dir, policy, "redis://127.0.0.1:1/0", train, ports, steps=1
    )
    path = run_dir / "run.toml"
    path.write_text(tomli_w.dumps(doc))
    return load_config(OrchestratorConfig, path, known_sections=set(doc) - {"algo"}), doc


def test_training_record_held_out_eval_and_sgpo_eval_render_the_same_prompt(
    chat_policy: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    cfg, doc = _orchestrator_config(chat_policy, tmp_path)
    assert cfg.prompt.format == "chat" and cfg.prompt.tokenizer == str(chat_policy)
    training = Orchestrator(cfg, _Sink()).prompter  # sgpo train's and sgpo record's orchestrator
    held_out = run_prompter(doc)  # sgpo train's held-out evaluation
    tokenizer = AutoTokenizer.from_pretrained(chat_policy)  # sgpo eval renders with its engine's tokenizer
    style = prompt_style("auto", chat_policy, tokenizer)
    assert style == "tiny"
    evaluation = build_prompter(style, "auto", chat_policy, tokenizer)
    sft = renderer(CHAT_PRESET, tokenizer)

    assert training.render(PROBLEM) == EXPECTED
    assert held_out.render(PROBLEM) == EXPECTED
    assert evaluation.render(PROBLEM) == EXPECTED
    assert sft(PROBLEM) == EXPECTED
    assert training.stop == held_out.stop == evaluation.stop == ("<|im_end|>", "<|endoftext|>")


def test_a_pretrained_folder_declares_its_prompt_and_the_tiny_policy_keeps_its_plain_one(
    chat_policy: Path, tmp_path: Path
) -> None:
    import json
    import shutil

    from sgpo.tasks.chat import policy_prompt
    from sgpo.tasks.pretrain import prompt_record
    from sgpo.tasks.tiny import TINY_PRESET, build_tiny_policy

    folder = tmp_path / "pretrained"
    shutil.copytree(chat_policy, folder)
    (folder / "pretrain.json").write_text(json.dumps({"prompt": prompt_record(CHAT_PRESET)}))
    assert prompt_record(CHAT_PRESET) == {
        "format": "chat",
        "system": CHAT_SYSTEM,
    }
    found = policy_prompt(folder)
    assert found is not None and found.tokenizer == str(folder) and found.system == CHAT_SYSTEM

    tiny = build_tiny_policy(tmp_path / "tiny")
    cfg, _ = _orchestrator_config(tiny, tmp_path)
    # the tiny policy's runs are unchanged: "{problem}\n", no tokenizer loaded, no stop strings added
    assert cfg.prompt.format == "plain" and cfg.prompt.tokenizer is None
    prompter = Orchestrator(cfg, _Sink()).prompter
    assert prompter.render(PROBLEM) == f"{PROBLEM}\n" and prompter.stop == ()
    assert prompt_record(TINY_PRESET) == {
        "format": "plain",
        "template": "{problem}\n",
    }
