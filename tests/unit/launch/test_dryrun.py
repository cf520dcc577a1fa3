"""`sgpo train --dry-run`: the recipe resolved as a run would be, every config validated, memory estimated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sgpo.launch.dryrun import plan_run
from sgpo.launch.train import TrainOptions
from sgpo.trainer.memory import estimate_peak_memory

ROOT = Path(__file__).resolve().parents[3]
QWEN_1_5B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}


@pytest.fixture
def qwen_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "qwen2.5-math-1.5b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(QWEN_1_5B))
    return folder


def test_the_1_5b_recipe_is_sized_for_its_layout_and_trainer_settings(qwen_folder: Path) -> None:
    opts = TrainOptions(
        preset=None, recipe=ROOT / "recipes" / "qwen2.5-math-1.5b.toml", policy=str(qwen_folder)
    )
    plan = plan_run(opts)
    assert plan.world == 4 and plan.dtype == "bf16" and plan.gradient_checkpointing
    assert "trainer x4 on GPU 4,5,6,7" in plan.layout
    assert 1.5e9 < plan.params < 1.6e9
    want = estimate_peak_memory(
        QWEN_1_5B,
        plan.seq_len,
        plan.micro_batch,
        dtype="bf16",
        world=4,
        gradient_checkpointing=True,
        loss_tokens=plan.completion_tokens,
    ).as_gib()
    assert plan.estimate_gib == pytest.approx(want)
    # the command line's layout is the one sized: 8 trainer GPUs halve the sharded state
    wide = plan_run(
        TrainOptions(**{**opts.__dict__, "trainer_gpus": tuple(range(8)), "generator_gpus": (8,)})
    )
    assert wide.world == 8 and wide.estimate_gib["optimizer"] == pytest.approx(
        plan.estimate_gib["optimizer"] / 2
    )


def test_a_bad_service_value_fails_the_dry_run_with_the_field(qwen_folder: Path, tmp_path: Path) -> None:
    recipe = (ROOT / "recipes" / "qwen2.5-math-1.5b.toml").read_text() + "\n[verifier]\nworkers = -3\n"
    path = tmp_path / "bad.toml"
    path.write_text(recipe)
    with pytest.raises(ValueError, match="workers"):
        plan_run(TrainOptions(preset=None, recipe=path, policy=str(qwen_folder)))


def test_the_cli_prints_the_estimate_and_starts_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sgpo.cli", "train", "--preset", "tiny", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "estimated peak memory per trainer device" in proc.stdout
    assert "layout: generator on CPU" in proc.stdout
    assert not (tmp_path / "runs").exists()  # nothing written
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "sgpo.cli",
            "train",
            "--recipe",
            str(ROOT / "recipes" / "qwen2.5-math-1.5b.toml"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert missing.returncode == 2
    assert "huggingface-cli download" in missing.stdout
