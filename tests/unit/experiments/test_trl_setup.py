"""The TRL run's setup, without TRL: the shapes it takes from SGPO's run.toml, its prompts in the orchestrator's
order, its run folder's run.toml. With a TRL python in SGPO_TRL_PYTHON, a 2-step `sgpo experiment trl-run`
(slow; skipped without one)."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from sgpo.experiments.trl_grpo import ordered_prompts, trl_run_doc, trl_shape
from sgpo.launch.presets import TRAIN_PRESETS
from sgpo.launch.train import write_datasets


def test_shape_from_run_toml_and_defaults() -> None:
    doc = {
        "algo": {"group_size": 8, "clip_eps_high": 0.28},
        "trainer": {"batch_groups": 16, "lr": 2e-4, "micro_batch_size": 24},
        "orchestrator": {"sampling": {"max_tokens": 160, "temperature": 1.0}},
    }
    s = trl_shape(doc)
    assert (s.group_size, s.batch_groups, s.seqs, s.lr, s.max_tokens) == (8, 16, 128, 2e-4, 160)
    assert s.micro == 16  # 24 does not divide 128: the largest micro-batch below it that does
    assert s.eps_high == 0.28 and s.eps_low == 0.2 and s.beta == 0.0 and s.max_grad_norm == 1.0


def test_trl_run_prompts_are_sgpo_trains_in_its_order(tmp_path: Path) -> None:
    preset = TRAIN_PRESETS["tiny"]
    write_datasets(tmp_path, 3, preset)
    doc = trl_run_doc(
        tmp_path, tmp_path / "policy", 3, 1e-4, None, {"trainer": {"device": "cuda"}, "judge": {}}
    )
    assert doc["algo"]["algo"] == "trl" and doc["trainer"]["lr"] == 1e-4 and "judge" not in doc
    assert (
        doc["algo"]["group_size"] == preset.group_size
        and doc["trainer"]["batch_groups"] == preset.batch_groups
    )
    prompts = ordered_prompts(doc, 40)
    from sgpo.orchestrator.dataset import iterate_epochs, load_prompts

    stream = iterate_epochs(load_prompts(tmp_path / "train_problems.jsonl"), 0, True, 3)
    assert [p.problem for p in prompts] == [next(stream)[1].problem for _ in range(40)]


@pytest.mark.slow
def test_trl_run_two_steps(tmp_path: Path) -> None:
    trl_python = os.environ.get("SGPO_TRL_PYTHON")
    if not trl_python:
        pytest.skip("set SGPO_TRL_PYTHON to a python that imports trl (bench/vs_trl.py's docstring)")
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        "[algo]\ngroup_size = 4\n[trainer]\nbatch_groups = 2\n[orchestrator.sampling]\nmax_tokens = 16\n"
    )
    out = tmp_path / "trl"
    cmd = [trl_python, "-m", "sgpo.cli", "experiment", "trl-run", "--out", str(out), "--lr", "3e-4", "--steps", "2",
           "--eval-every", "1", "--eval-temperature", "0", "--device", "cpu", "--config", str(cfg)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "services")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    evals = [json.loads(x) for x in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 1, 2] and evals[-1]["sampled"] == 16
    assert tomllib.loads((out / "run.toml").read_text())["algo"]["algo"] == "trl"
    assert json.loads((out / "summary.json").read_text())["interrupted"] is False
