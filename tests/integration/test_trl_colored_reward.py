"""TRL for real on CPU: `GRPOTrainer` trains the tiny policy for a few steps with `ColoredReward` against the real
verifier and judge services started here (examples/trl_colored_reward.py, run by a TRL environment's python).

TRL lives in its own environment, as bench/vs_trl.py does: a venv that sees the system packages (the project's
CPU torch, sgpo's dependencies) with trl installed into it. SGPO_TRL_PYTHON names its python; without it the
test builds one under ~/.cache/sgpo/trl-venv (about 2.5 minutes, needs PyPI). Slow: a few minutes on 2 cores.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sgpo.core import AlgoConfig
from tests.support import ROOT, free_port, run_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRL_VERSION = "1.16.0"
KEY = "trl-test-key"
GROUP = 4
PROMPTS = 4
STEPS = 3


def trl_python() -> str:
    given = os.environ.get("SGPO_TRL_PYTHON")
    if given:
        return given
    venv = Path.home() / ".cache" / "sgpo" / f"trl-venv-{TRL_VERSION}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import trl, torch; assert trl.__version__ == '{TRL_VERSION}'"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return str(python)
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"trl=={TRL_VERSION}"], check=True)
    # trl must not have replaced the project's torch (a CUDA build would be pulled from PyPI)
    version = ["-c", "import torch; print(torch.__version__)"]
    here = subprocess.run([sys.executable, *version], capture_output=True, text=True).stdout
    there = subprocess.run([str(python), *version], capture_output=True, text=True).stdout
    assert here == there, f"the TRL venv's torch {there!r} differs from the project's {here!r}"
    return str(python)


def test_grpo_trainer_learns_from_colored_rewards(tmp_path: Path) -> None:
    from sgpo.tasks.models import resolve_model

    python = trl_python()
    policy = resolve_model("tiny")
    http_port = free_port()
    with run_service("verifier", tmp_path, env={"SGPO_VERIFIER__WORKERS": "1"}) as verifier:
        judge_env = {
            "SGPO_JUDGE__HTTP_PORT": str(http_port),
            "SGPO_JUDGE__API_KEYS": json.dumps([KEY]),
            "SGPO_JUDGE__SCORING__VERIFIER": verifier.target,
        }
        with run_service("judge", tmp_path, env=judge_env):
            report = tmp_path / "report.json"
            cmd = [
                python,
                str(ROOT / "examples" / "trl_colored_reward.py"),
                *("--judge", f"http://127.0.0.1:{http_port}", "--api-key", KEY, "--model", policy),
                *("--steps", str(STEPS), "--prompts-per-step", str(PROMPTS), "--num-generations", str(GROUP)),
                *("--max-completion-length", "96", "--arith-steps", "4,5,6", "--prompts-per-level", "8"),
                *("--output-dir", str(tmp_path / "trl"), "--report", str(report)),
            ]
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT / "services"), os.environ.get("PYTHONPATH", "")]),
            }
            run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    print(run.stdout)

    data = json.loads(report.read_text())
    scored, logged = data["scored"], [h for h in data["log_history"] if "reward" in h]
    assert (
        len(scored) == STEPS and len(logged) == STEPS
    )  # one generation (one reward call) per optimizer step
    r_max = AlgoConfig().r_max
    colored_groups = 0
    for s, h in zip(scored, logged, strict=True):
        assert s["groups"] == PROMPTS and s["uncolorable"] == 0 and not s["judge_errors"]
        rewards, plain = s["rewards"], s["verifier_rewards"]
        n = PROMPTS * GROUP
        assert len(rewards) == n
        for g in range(PROMPTS):
            block = slice(g * GROUP, (g + 1) * GROUP)
            if all(p == 0.0 for p in plain[block] if p is not None) and any(
                p is not None for p in plain[block]
            ):
                # an all-negative group: its wrong answers got graded rewards in (0, r_max), not TRL's flat zeros
                colored_groups += 1
                assert all(
                    0.0 < r < r_max for r, p in zip(rewards[block], plain[block], strict=True) if p == 0.0
                )
            else:
                assert rewards[block] == plain[block]  # mixed or all-positive groups keep 0/1
        # the trainer's logged reward is the mean of the rewards ColoredReward returned (None left out)
        got = [r for r in rewards if r is not None]
        assert math.isclose(h["rewards/colored_reward/mean"], sum(got) / len(got), rel_tol=1e-5)
        assert math.isclose(h["reward"], sum(got) / len(got), rel_tol=1e-5)
        assert math.isclose(h["sgpo/colored_frac"], s["colored"] / PROMPTS)
    assert colored_groups > 0, "no all-negative group in 3 steps of levels 4-6: the test's premise failed"
    before = [h["sgpo/reward_before_coloring"] for h in logged]
    after = [h["reward"] for h in logged]
    assert sum(after) > sum(before)  # coloring only ever raises a wrong answer's reward above 0
