"""`sgpo experiment` end to end: a one-run study with the real `sgpo train` (every service a real process),
then the same command again, which finds the run complete and only aggregates.

The policy is a 5-iteration tiny one made here (`sgpo pretrain --out`), so the test never depends on (or
fills) the default cache; a --config caps completions at 24 tokens to keep the held-out evaluations short.
About a minute on 2 cores.
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


def test_online_study_runs_resumes_and_aggregates(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SGPO_REDIS_URL"}
    env["SGPO_CACHE_DIR"] = str(tmp_path / "empty-cache")  # a run that fell back on the cache would pretrain
    policy = tmp_path / "policy"
    pretrain = ["pretrain", "--preset", "tiny", "--out", str(policy), "--iters", "5", "--eval-per-level", "2"]
    made = subprocess.run(
        sgpo_cmd(*pretrain, "--threads", "1", "--no-progress"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
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
