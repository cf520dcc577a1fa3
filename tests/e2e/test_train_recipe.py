"""`sgpo train --recipe recipes/tiny-chat.toml` through the real CLI: the real topology on a CPU.

Two generator replicas (two `sgpo serve generator` processes, balanced by the orchestrator, both updated on
every publish), the trainer under `torchrun --nproc-per-node 2` (gloo, FSDP2), the real verifier and judge,
held-out evaluation at the start, mid-run and at the end. One replica is killed with SIGKILL mid-run: the
launcher starts it again, the trainer sends it the newest weights, the run completes with every group
trained exactly once and all-negative groups colored.

The recipe's policy is `tiny-chat` (the shipped chat-format Qwen2 policy: chat prompts through its ChatML
template, stop at <|im_end|>). 4 steps prove the path, not learning.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.support import ROOT, sgpo_cmd

pytestmark = pytest.mark.e2e


def read_jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_records(path: Path, msg: str) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if f'"msg": "{msg}"' in line:
            out.append(json.loads(line[line.index("{") :]))
    return out


@pytest.mark.timeout(1800)  # 6 minutes measured on the busy 2-core VM; the run's own timeout is 1,500 s
def test_tiny_chat_recipe_trains_through_replicas_and_torchrun_and_survives_a_replica_kill(
    tmp_path: Path, redis_url: str
) -> None:
    from sgpo.trainer.checkpoint import latest_checkpoint, load_state

    run_dir = tmp_path / f"tiny-chat-{os.getpid()}"
    killed: list[int] = []

    def kill_replica_after_step_1() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if read_jsonl(run_dir / "metrics.jsonl"):
                pid = json.loads((run_dir / "logs" / "services.json").read_text())["generator-1"]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    env = {**os.environ, "SGPO_REDIS_URL": redis_url}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        sgpo_cmd(
            "train",
            "--recipe",
            str(ROOT / "recipes" / "tiny-chat.toml"),
            "--run-dir",
            str(run_dir),
            "--tracking",
            "none",
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    chaos = threading.Thread(target=kill_replica_after_step_1)
    chaos.start()
    output, _ = proc.communicate(timeout=1500)
    chaos.join(5)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, output[-4000:]
    print(f"tiny-chat recipe e2e: {seconds:.0f}s")
    assert "layout: generator-0 on CPU · generator-1 on CPU · trainer x2 on CPU" in output

    summary = json.loads((run_dir / "summary.json").read_text())
    run_toml = (run_dir / "run.toml").read_text()
    assert "generator_target = [" in run_toml
    # held-out evaluation at the start, every 2 steps and at the end, each of one policy version
    evals = summary["eval"]
    assert [e["step"] for e in evals] == [0, 2, 4]
    assert all(len(e["policy_versions"]) == 1 for e in evals)
    assert [e["policy_versions"][0] for e in evals] == [0, 2, 4]
    # every group trained exactly once, all-negative groups colored
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None
    trained = [g for ids in load_state(ckpt).consumed for g in ids]
    assert len(trained) == len(set(trained)) == 4 * 8
    assert summary["colored_groups"] > 0 and summary["group_kinds"].get("all_negative", 0) > 0

    # the trainer ran as 2 FSDP ranks under torchrun
    logs = run_dir / "logs"
    (loaded,) = log_records(logs / "trainer.log", "model loaded")
    assert loaded["world"] == 2

    # replica 1 was killed after step 1 and started again by the launcher with the initial weights (version 0);
    # the evaluation of step 2 waited for it, the trainer's watch sent it v2, and it ended on v4
    # Once in a full CI run (2026-12-07) the restarted replica exited once more and was restarted again (the run
    # completed, every check below held); its log was lost with the run's tmp folder, so the launcher's lines
    # about it are printed on failure. Unexplained: see the closing note of that session.
    restarted = [line for line in output.splitlines() if "exited with code" in line or "restart of" in line]
    assert killed and set(summary["restarts"]) == {"generator-1"}, restarted
    assert 1 <= summary["restarts"]["generator-1"] <= 2, restarted
    if summary["restarts"]["generator-1"] > 1:
        print("generator-1 restarted twice:", *restarted, sep="\n  ")
    services = json.loads((logs / "services.json").read_text())
    target = f"127.0.0.1:{services['generator-1']['port']}"
    caught = log_records(logs / "trainer.log", "replica caught up")
    assert [r["version"] for r in caught if r["target"] == target] == [2], caught
    second_life = (logs / "generator-1.log").read_text().split('"msg": "engine loaded"')[-1]
    updates = [
        json.loads(ln[ln.index("{") :])["version"]
        for ln in second_life.splitlines()
        if "weights updated" in ln
    ]
    assert updates == [2, 3, 4], updates
    assert [u["version"] for u in log_records(logs / "generator-0.log", "weights updated")] == [1, 2, 3, 4]
    # ... and no replica sampled past the staleness bound (max_policy_lag 1): the groups of trainer step s
    # came from policy version >= s - 2, the restarted replica's version-0 weights included
    version = {g["group_id"]: g["policy_version"] for g in read_jsonl(run_dir / "groups.jsonl")}
    for step, ids in enumerate(load_state(ckpt).consumed, start=1):
        assert all(version[g] >= step - 2 for g in ids), (step, [version[g] for g in ids])
    # both replicas served rollouts
    (finished,) = log_records(logs / "orchestrator.log", "orchestrator finished")
    assert len(finished["generate_calls"]) == 2 and all(n > 0 for n in finished["generate_calls"].values())
