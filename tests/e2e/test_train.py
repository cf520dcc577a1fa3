"""`sgpo train --preset tiny` through the real CLI: every service a real process, the real Redis.

In CI, from a briefly pretrained policy (the full pretraining takes minutes): a short run colors its
all-negative groups, evaluates exactly one policy version per evaluation, trains every group once and stops
on its sampling budget; another survives kill -9 of the generator, the trainer and the judge mid-run with no
group lost or trained twice and no process left behind.

`slow`: the issue's bar on the preset's own policy (pretrained first when the cache lacks it, 6 minutes
here): the preset's 60 steps raise held-out accuracy (avg@4 at T = 1) and color all-negative groups.
2026-11-27 on the 2-core VM, 60-step runs rose by 0.040 and 0.044 (by 0.027-0.037 over 3 seeds on a GPU,
docs/results.md, section 0); 30 steps rose by only 0.015 here (0.251 -> 0.251 -> 0.266), too thin a margin.
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
import redis

from tests.support import sgpo_cmd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def quick_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy after 40 SFT steps: it writes the step format but gets most answers wrong."""
    out = tmp_path_factory.mktemp("policy") / "tiny-40"
    proc = subprocess.run(
        sgpo_cmd("pretrain", "--iters", "40", "--eval-per-level", "2", "--out", str(out), "--no-progress"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def run_train(
    run_dir: Path, redis_url: str, *extra: str, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SGPO_REDIS_URL": redis_url}
    return subprocess.run(
        sgpo_cmd("train", "--preset", "tiny", "--run-dir", str(run_dir), *extra),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def final_consumed(run_dir: Path) -> list[str]:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    return [g for ids in state["consumed"] for g in ids]


def cleanup(redis_url: str, run_dir: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"sgpo:{run_dir.name}:*", count=1000))
    if keys:
        client.delete(*keys)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_short_run_colors_evaluates_single_policies_and_trains_each_group_once(
    tmp_path: Path, redis_url: str, quick_policy: Path
) -> None:
    run_dir = tmp_path / f"e2e-short-{os.getpid()}"
    try:
        out = run_train(
            run_dir, redis_url, "--policy", str(quick_policy), "--steps", "50", "--eval-every", "2",
            "--max-sampled", str(5 * 16 * 8 - 1), "--eval-temperature", "0", timeout=600,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "sampling budget reached" in out.stdout
        evals = read_jsonl(run_dir / "eval.jsonl")
        steps = [e["step"] for e in evals]
        assert steps[0] == 0 and steps == sorted(set(steps)) and len(steps) >= 3 and steps[-1] >= 5
        assert all(e["samples"] == 1 and e["temperature"] == 0 for e in evals)  # greedy, as asked
        for e in evals:  # the trainer paused: one policy per evaluation, the one of that step
            assert e["policy_versions"] == [e["step"]], e
            assert e["sampled"] == e["step"] * 16 * 8  # grpo-style sgpo drops nothing: 128 per step
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["colored_groups"] > 0 and summary["group_kinds"].get("all_negative", 0) > 0
        assert summary["sampled"] >= 5 * 16 * 8 - 1
        for png in ("reward.png", "accuracy.png", "groups.png"):
            assert (run_dir / png).stat().st_size > 5000
        trained = final_consumed(run_dir)
        assert len(trained) == len(set(trained)) == summary["steps"] * 16
        # TensorBoard events by default, read back with TensorBoard's own reader
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run_dir / "tensorboard"))
        acc.Reload()
        assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, summary["steps"] + 1))
        assert [e.step for e in acc.Scalars("eval/overall")] == steps
        assert len(acc.Scalars("groups/all_negative_fraction")) >= summary["steps"]
        assert "tensorboard --logdir" in out.stdout
        # checkpoints/best: the evaluated step of best held-out accuracy, checkpointed and kept
        best = summary["best"]
        assert best["overall"] == max(e["overall"] for e in evals if e["step"] > 0)
        link = run_dir / "checkpoints" / "best"
        assert link.readlink() == Path(f"step-{best['step']}") and (link / "trainer_state.json").is_file()
    finally:
        cleanup(redis_url, run_dir)


@pytest.mark.slow
def test_train_tiny_learns_and_colors(tmp_path: Path, redis_url: str) -> None:
    """The main command on the preset's own policy (pretrained first if the cache lacks it, ~7 minutes here)."""
    run_dir = tmp_path / f"e2e-learn-{os.getpid()}"
    try:
        out = run_train(run_dir, redis_url, "--steps", "60", "--eval-every", "30")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        evals = read_jsonl(run_dir / "eval.jsonl")
        assert [e["step"] for e in evals] == [0, 30, 60]
        assert all(e["samples"] == 4 and e["temperature"] == 1.0 for e in evals)  # the preset's avg@4
        assert evals[-1]["overall"] > evals[0]["overall"], [e["overall"] for e in evals]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["colored_groups"] > 0 and summary["group_kinds"].get("all_negative", 0) > 0
        for png in ("reward.png", "accuracy.png", "groups.png"):
            assert (run_dir / png).stat().st_size > 5000
        trained = final_consumed(run_dir)
        assert len(trained) == len(set(trained)) == 60 * 16
    finally:
        cleanup(redis_url, run_dir)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--eval-every", "-1"], "--eval-every must be >= 1"),
        (["--eval-samples", "0"], "--eval-samples must be >= 1"),
        (["--eval-temperature", "-0.5"], "--eval-temperature must be >= 0"),
        (["--eval-temperature", "nan"], "--eval-temperature must be >= 0"),
        (["--max-sampled", "0"], "--max-sampled must be >= 1"),
        (["--config", "TRACKING"], "invalid [tracking] config"),
    ],
)
def test_bad_options_fail_before_anything_starts(tmp_path: Path, argv: list[str], message: str) -> None:
    run_dir = tmp_path / "run"
    if "TRACKING" in argv:
        bad = tmp_path / "bad.toml"
        bad.write_text('[tracking]\nbackends = ["neptune"]\n')
        argv = [str(bad) if a == "TRACKING" else a for a in argv]
    out = subprocess.run(
        sgpo_cmd("train", "--preset", "tiny", "--run-dir", str(run_dir), *argv),
        env={**os.environ, "SGPO_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stdout
    assert not run_dir.exists() and not (tmp_path / "cache").exists()  # nothing pretrained, nothing written


def test_train_survives_kill_9_of_generator_trainer_and_judge(
    tmp_path: Path, redis_url: str, quick_policy: Path
) -> None:
    run_dir = tmp_path / f"e2e-faults-{os.getpid()}"
    killed: list[str] = []
    pids_seen: set[int] = set()

    def services() -> dict:  # type: ignore[type-arg]
        path = run_dir / "logs" / "services.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def step() -> int:
        rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
        return rows[-1]["step"] if rows else 0

    def chaos() -> None:
        plan = [(3, "generator"), (8, "trainer"), (12, "judge")]
        deadline = time.monotonic() + 600
        for at_step, name in plan:
            while step() < at_step and time.monotonic() < deadline:
                time.sleep(0.2)
            pid = services().get(name, {}).get("pid")
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed.append(name)

    def watch_pids() -> None:
        while proc.poll() is None:
            pids_seen.update(s["pid"] for s in services().values())
            time.sleep(0.2)

    try:
        env = {**os.environ, "SGPO_REDIS_URL": redis_url}
        proc = subprocess.Popen(
            sgpo_cmd(
                "train",
                "--preset",
                "tiny",
                "--run-dir",
                str(run_dir),
                "--steps",
                "20",
                "--eval-every",
                "100",
                "--eval-temperature",
                "0",
                "--policy",
                str(quick_policy),
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threads = [threading.Thread(target=chaos), threading.Thread(target=watch_pids)]
        for t in threads:
            t.start()
        output, _ = proc.communicate(timeout=900)
        for t in threads:
            t.join(timeout=5)
        assert proc.returncode == 0, output[-4000:]
        assert killed == ["generator", "trainer", "judge"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["restarts"].get("generator", 0) >= 1 and summary["restarts"].get("trainer", 0) >= 1
        trained = final_consumed(run_dir)
        assert len(trained) == len(set(trained)) == 20 * 16, "a group was trained twice or lost"
        produced = {g["group_id"] for g in read_jsonl(run_dir / "groups.jsonl")}
        assert set(trained) <= produced
        # Groups produced but not in the final checkpoint are exactly those still in the queue.
        client = redis.Redis.from_url(redis_url)
        queued = {e[1][b"group_id"].decode() for e in client.xrange(f"sgpo:{run_dir.name}:groups")}
        assert produced - set(trained) <= queued
        time.sleep(1)
        assert not [p for p in pids_seen if alive(p)], "a service process outlived the run"
    finally:
        cleanup(redis_url, run_dir)
