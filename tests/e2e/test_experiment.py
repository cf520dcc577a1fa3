"""`sgpo experiment` end to end: a one-run study with the real `sgpo train` (every service a real process),
then the same command again, which finds the run complete and only aggregates; `sgpo experiment score` on a
run's held-out problems; and (slow) the tuned study of issue 22 at its smallest.

The policy is a 5-iteration tiny one made here once per module (`sgpo pretrain --out`), so the tests never
depend on (or fill) the default cache; a --config caps completions at 24 tokens to keep the held-out
evaluations short. About a minute and a half on 2 cores without the slow test.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import sgpo_cmd

pytestmark = [pytest.mark.e2e]


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "SGPO_REDIS_URL"}
    env["SGPO_CACHE_DIR"] = str(tmp / "empty-cache")  # a run that fell back on the cache would pretrain
    return env


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("policy")
    out = tmp / "policy"
    pretrain = ["pretrain", "--preset", "tiny", "--out", str(out), "--iters", "5", "--eval-per-level", "2"]
    made = subprocess.run(
        sgpo_cmd(*pretrain, "--threads", "1", "--no-progress"),
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    return out


def test_online_study_runs_resumes_and_aggregates(tmp_path: Path, policy: Path) -> None:
    env = _env(tmp_path)
    extra = tmp_path / "short.toml"
    extra.write_text("[orchestrator.sampling]\nmax_tokens = 24\n")
    out = tmp_path / "exp"
    cmd = sgpo_cmd(
        "experiment", "online", "--out", str(out), "--algos", "sgpo", "--seeds", "0",
        "--max-sampled", "256", "--eval-every", "1", "--eval-temperature", "0", "--policy", str(policy),
        "--config", str(extra),
    )  # fmt: skip

    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    log = first.stdout[-4000:] + first.stderr[-4000:]
    assert first.returncode == 0, log
    assert "[1/1] sgpo-s0" in first.stdout and "sgpo-s0 eval @ step 2 · sampled 256" in first.stdout, log
    run_dir = out / "runs" / "sgpo-s0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["steps"] == 2
    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [0, 1, 2] and evals[-1]["sampled"] == 256
    assert all(
        e["temperature"] == 0 and e["samples"] == 1 for e in evals
    )  # the study's evaluation reached it
    assert "max_tokens = 24" in (run_dir / "run.toml").read_text()  # the extra config reached the run
    assert not (tmp_path / "empty-cache").exists()

    res = json.loads((out / "results.json").read_text())["studies"]["online"]
    assert res["complete"] == 1 and res["missing"] == []
    final = res["final"]["sgpo"]
    assert final["n"] == 1 and final["steps"]["mean"] == 2 and final["sampled"]["mean"] == 256
    assert res["curves"]["sgpo"]["sampled"]["overall"]["x"] == [0, 128, 256]
    assert "### online: final held-out accuracy" in (out / "tables.md").read_text()
    for name in ("online-accuracy-vs-step", "online-accuracy-vs-sampled", "online-all-negative"):
        assert 5_000 < (out / f"{name}.png").stat().st_size < 150_000

    # Invoked again (as after a crash): the complete run is skipped, the aggregate is rewritten.
    stamp = (run_dir / "summary.json").stat().st_mtime_ns
    t0 = time.monotonic()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "1 already complete (skipped), 0 to run" in again.stdout
    assert (run_dir / "summary.json").stat().st_mtime_ns == stamp
    assert time.monotonic() - t0 < 60


def test_score_scores_a_model_on_a_runs_problems(tmp_path: Path, policy: Path) -> None:
    """`sgpo experiment score`: the eval harness on the problems of a run folder, written as the study reads it."""
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {"problem": "Start with 3. Add 4.", "answer": "7", "steps": 1, "unique_id": "a"},
        {"problem": "Start with 5. Subtract 2. Add 6.", "answer": "9", "steps": 2, "unique_id": "b"},
    ]
    (run / "eval_problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "run.toml").write_text("[orchestrator.sampling]\nmax_tokens = 24\ntemperature = 1.0\n")
    out = tmp_path / "score"
    cmd = [
        "experiment",
        "score",
        "--run",
        str(run),
        "--model",
        str(policy),
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    done = subprocess.run(sgpo_cmd(*cmd), env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rec = json.loads((out / "score.json").read_text())
    assert rec["n"] == 2 and rec["samples"] == 1 and rec["temperature"] == 0
    assert set(rec["accuracy"]) == {"1", "2"} and 0.0 <= rec["overall"] <= 1.0
    assert rec["mean_tokens"] <= 24 and rec["model"] == str(policy)
    assert json.loads((out / "summary.json").read_text())["interrupted"] is False
    missing = subprocess.run(
        sgpo_cmd("experiment", "score", "--run", str(tmp_path), "--out", str(out)),
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "no eval_problems.jsonl" in missing.stdout


@pytest.mark.slow
def test_tune_study_smallest(tmp_path: Path, policy: Path) -> None:
    """The tuned study at its smallest: 2 algorithms x 2 learning rates x 1 seed on the validation split, the
    selected rate of each on test, a greedy score of each final checkpoint, the report; two runs at a time.
    About 5 minutes on the shared 2-core VM (each `sgpo train` starts five services), hence slow; the unit
    tests in tests/unit/experiments cover the planning, selection, scheduling and report without processes."""
    extra = tmp_path / "short.toml"
    extra.write_text("[orchestrator.sampling]\nmax_tokens = 24\n")
    out = tmp_path / "exp"
    cmd = sgpo_cmd(
        "experiment", "tune", "--out", str(out), "--algos", "sgpo,grpo", "--lrs", "1e-4,3e-4",
        "--tune-seeds", "0", "--seeds", "0", "--control-seeds", "0", "--noise", "0", "--no-color-scope-control",
        "--steps", "2", "--eval-every", "2", "--eval-temperature", "0", "--policy", str(policy),
        "--config", str(extra), "--jobs", "2", "--device", "cpu",
    )  # fmt: skip
    done = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=900)
    log = done.stdout[-5000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    assert "running 4 runs, 2 at a time" in done.stdout and "selection sgpo: 0.0001" in done.stdout, log
    for name in ("val-sgpo-lr0.0003-s0", "val-grpo-lr0.0001-s0"):
        evals = [json.loads(x) for x in (out / "runs" / name / "eval.jsonl").read_text().splitlines()]
        assert [e["split"] for e in evals] == ["validation", "validation"]
    sel = json.loads((out / "selection.json").read_text())
    assert sel["sgpo"]["lr"] == 1e-4 and sel["grpo"]["table"]["0.0003"]["n"] == 1  # a tie: the smaller lr
    final = out / "runs" / "sgpo-lr0.0001-s0"
    assert json.loads((final / "summary.json").read_text())["eval_split"] == "test"
    greedy = json.loads((out / "runs" / "greedy-sgpo-lr0.0001-s0" / "score.json").read_text())
    assert greedy["step"] == 2 and greedy["split"] == "test" and greedy["n"] == 800
    res = json.loads((out / "tune-results.json").read_text())
    assert res["selection"] == {"sgpo": 1e-4, "grpo": 1e-4}
    assert res["final"]["sgpo"]["greedy"] == [greedy["overall"]]
    assert "sgpo-grpo" in res["differences"] and res["bootstrap"]["resamples"] == 10_000
    assert "| sgpo - grpo |" in (out / "tune-tables.md").read_text()
    assert (out / "tune-final-accuracy.png").is_file() and (out / "tune-sweep.png").is_file()
    again = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "4 already complete (skipped), 0 to run" in again.stdout
