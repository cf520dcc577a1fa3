"""`sgpo train --preset tiny` with the vllm engine serving the policy (vLLM's CPU build in CI: marker `vllm`).

A short run, 6 steps of 2 groups, on the shipped tiny policy: the generator is vLLM in a process of its own
(the service's default, as deployed), fed each published step through `reload_weights` from the folder; the
run must color all-negative groups, evaluate the version of its step and train every group exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_train import cleanup, final_consumed, read_jsonl
from tests.support import sgpo_cmd

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

STEPS, GROUPS = 6, 2
# The generator options the CPU tests use (docs/generator.md): an explicit KV cache, no torch.compile.
VLLM_RUN_CONFIG = f"""
[generator]
engine = "vllm"
kv_cache_memory_bytes = {256 << 20}
enforce_eager = true

[trainer]
batch_groups = {GROUPS}

[orchestrator]
batch_groups = {GROUPS}
prompts_per_request = {GROUPS}
high_water = {4 * GROUPS}
"""


def test_train_with_vllm_colors_and_trains_each_group_once(tmp_path: Path, redis_url: str) -> None:
    run_dir = tmp_path / f"e2e-vllm-{os.getpid()}"
    config = tmp_path / "vllm.toml"
    config.write_text(VLLM_RUN_CONFIG)
    try:
        out = subprocess.run(
            sgpo_cmd(
                "train", "--preset", "tiny", "--run-dir", str(run_dir), "--config", str(config),
                "--steps", str(STEPS), "--eval-every", str(STEPS), "--eval-temperature", "0",
                "--levels", "5,6", "--tracking", "none",
            ),
            env={**os.environ, "SGPO_REDIS_URL": redis_url},
            capture_output=True,
            text=True,
            timeout=900,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        run_toml = (run_dir / "run.toml").read_text()
        assert 'engine = "vllm"' in run_toml
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == STEPS
        assert summary["group_kinds"].get("all_negative", 0) > 0 and summary["colored_groups"] > 0, summary
        trained = final_consumed(run_dir)
        assert len(trained) == len(set(trained)) == STEPS * GROUPS
        evals = read_jsonl(run_dir / "eval.jsonl")
        assert [e["step"] for e in evals] == [0, STEPS]
        assert all(e["policy_versions"] == [e["step"]] for e in evals), evals  # the reloaded weights served
    finally:
        cleanup(redis_url, run_dir)
