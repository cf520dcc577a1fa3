"""`sgpo eval --watch RUN_DIR`, the held-out evaluation a deployment runs beside its trainer, against a real run
folder: checkpoints of the tiny policy (the shipped weights, and random weights of the same shape as a bad
step), the arith held-out set, a run config. Checked: eval.jsonl's lines (the fields `sgpo train` writes), the
`best` pointer, TensorBoard's eval/* read back with its own reader, a restart that skips evaluated steps and
repairs the pointer, a checkpoint that appears while it watches, SIGTERM; and that its numbers are those of
`sgpo train`'s evaluation over the served generator and verifier for the same weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sgpo.tasks.tiny import TINY_PRESET, build_tiny_policy, shipped_policy
from tests.support import run_service, sgpo_cmd

pytestmark = pytest.mark.integration

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
MAX_TOKENS = 48
# eval_every 20; avg@2 at temperature 1 (the tiny recipe's kind of evaluation, fewer samples)
WATCH = ("--eval-every", "20", "--eval-samples", "2", "--eval-temperature", "1.0", "--threads", "1")


def write_checkpoint(run_dir: Path, step: int, weights: Path) -> Path:
    """checkpoints/step-N as the trainer leaves it: an HF folder with trainer_state.json, appearing by rename."""
    policy = shipped_policy(TINY_PRESET)
    assert policy is not None
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{step}"
    shutil.copytree(policy, tmp)
    shutil.copy(weights / "model.safetensors", tmp / "model.safetensors")
    (tmp / "trainer_state.json").write_text(
        json.dumps({"step": step, "policy_version": step, "consumed": []})
    )
    os.rename(tmp, root / f"step-{step}")
    return root / f"step-{step}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    policy = shipped_policy(TINY_PRESET)
    assert policy is not None
    return {"good": policy, "random": build_tiny_policy(tmp_path_factory.mktemp("random") / "p", seed=1)}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder as a deployed trainer leaves it, with the held-out set and run config `sgpo train` writes."""
    from sgpo.tasks.arith import generate_split, write_jsonl

    run = tmp_path / "run"
    run.mkdir()
    items = generate_split("rl-eval", (1, 2), 4, seed=0, spec=TINY_PRESET.task)
    write_jsonl(run / "eval_problems.jsonl", items)
    (run / "run.toml").write_text(
        f"[orchestrator.sampling]\nmax_tokens = {MAX_TOKENS}\ntemperature = 1.0\n[trainer]\nbatch_groups = 2\n"
    )
    return run


def watch(run_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        sgpo_cmd("eval", "--watch", str(run_dir), *WATCH, *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def evals(run_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]


def tb_eval(run_dir: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return sorted((e.step, round(e.value, 6)) for e in acc.Scalars("eval/overall"))


def test_watch_evaluates_checkpoints_points_best_logs_and_skips_on_restart(
    run_dir: Path, weights: dict[str, Path]
) -> None:
    write_checkpoint(run_dir, 20, weights["random"])  # a bad step
    write_checkpoint(run_dir, 30, weights["good"])  # not a multiple of 20: not evaluated
    write_checkpoint(run_dir, 40, weights["good"])
    first = watch(run_dir, "--initial-policy", str(weights["good"]), "--max-steps", "40")
    lines = evals(run_dir)
    assert [r["step"] for r in lines] == [0, 20, 40]
    for r in lines:  # the fields of `sgpo train`'s lines
        assert {"accuracy", "overall", "n", "mean_tokens", "policy_versions", "seconds", "samples"} <= set(r)
        assert set(r["accuracy"]) == {"1", "2"} and r["n"] == 8 * 2
        assert (r["samples"], r["temperature"]) == (2, 1.0)
    assert [r["policy_versions"] for r in lines] == [[0], [20], [40]]
    assert lines[0]["overall"] == lines[2]["overall"], "the same weights, the same seeded samples"
    assert lines[1]["overall"] < lines[2]["overall"], "random weights answer nothing right"
    best = run_dir / "checkpoints" / "best"
    assert os.readlink(best) == "step-40"
    record = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert (record["step"], record["checkpoint"]) == (40, "step-40")
    assert record["overall"] == lines[2]["overall"]
    assert "eval @ step   20" in first.stdout and "evaluated: done" in first.stdout
    assert tb_eval(run_dir) == [(r["step"], round(r["overall"], 6)) for r in lines]

    # Restart after the run went on to step 60: only step 60 is evaluated; a lost pointer is put back.
    best.unlink()
    write_checkpoint(run_dir, 60, weights["random"])
    second = watch(run_dir, "--initial-policy", str(weights["good"]), "--max-steps", "60")
    assert "already evaluated: steps [0, 20, 40]" in second.stdout
    assert "evaluating step 60" in second.stdout and "evaluating step 40" not in second.stdout
    lines = evals(run_dir)
    assert [r["step"] for r in lines] == [0, 20, 40, 60]
    assert os.readlink(best) == "step-40", "best is recomputed from eval.jsonl: step 60 is no better"
    assert [s for s, _ in tb_eval(run_dir)] == [0, 20, 40, 60]


def test_watch_follows_new_checkpoints_and_stops_on_sigterm(
    run_dir: Path, weights: dict[str, Path], tmp_path: Path
) -> None:
    log_path = tmp_path / "watch.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            sgpo_cmd("eval", "--watch", str(run_dir), *WATCH, "--poll-s", "0.5", "--tracking", "none"),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env=ENV,
        )
    try:

        def wait_for(check: object, what: str) -> None:
            deadline = time.monotonic() + 180
            while not check():  # type: ignore[operator]
                assert proc.poll() is None, f"the watcher exited:\n{log_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"no {what}:\n{log_path.read_text()[-3000:]}"
                time.sleep(0.2)

        wait_for(lambda: "watching" in log_path.read_text(), "start line")
        write_checkpoint(run_dir, 20, weights["good"])  # the trainer checkpoints while it watches
        wait_for(lambda: (run_dir / "eval.jsonl").is_file() and evals(run_dir), "evaluation of step 20")
        assert [r["step"] for r in evals(run_dir)] == [20]
        assert os.readlink(run_dir / "checkpoints" / "best") == "step-20"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "stopped" in log_path.read_text()
    assert not (run_dir / "tensorboard").exists(), "--tracking none"


def test_watch_gives_the_numbers_of_the_served_evaluation(
    run_dir: Path, weights: dict[str, Path], tmp_path: Path
) -> None:
    """`sgpo train` evaluates through the served generator and verifier; the watcher, the same weights in its
    own engine and verifier: the same held-out accuracy, completion by completion (seeded sampling)."""
    import grpc

    from sgpo.launch.evaluate import evaluate_served_policy, load_eval_items, run_prompter
    from sgpo.v1 import generator_pb2_grpc, verifier_pb2_grpc

    watch(run_dir, "--initial-policy", str(weights["good"]), "--once")
    (mine,) = evals(run_dir)
    env = {"SGPO_GENERATOR__MODEL": str(weights["good"]), "SGPO_GENERATOR__THREADS": "1"}
    with (
        run_service("generator", tmp_path, env=env) as gen,
        run_service("verifier", tmp_path, env={"SGPO_VERIFIER__WORKERS": "1"}) as ver,
        grpc.insecure_channel(gen.target) as gch,
        grpc.insecure_channel(ver.target) as vch,
    ):
        served = evaluate_served_policy(
            generator_pb2_grpc.GeneratorServiceStub(gch),
            verifier_pb2_grpc.VerifierServiceStub(vch),
            load_eval_items(run_dir / "eval_problems.jsonl", "steps"),
            run_prompter({"orchestrator": {}}),
            MAX_TOKENS,
            samples=2,
            temperature=1.0,
        )
    assert mine["accuracy"] == served["accuracy"]
    assert (mine["overall"], mine["n"], mine["mean_tokens"]) == (
        served["overall"],
        served["n"],
        served["mean_tokens"],
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--eval-every", "0"), "--eval-every must be >= 1"),
        (("--eval-samples", "0"), "--eval-samples must be >= 1"),
        (("--eval-set", "run.toml"), "is not a JSON row with problem and answer"),
        (("--eval-set", "/nonexistent.jsonl"), "does not exist"),
        (("--model", "x"), "not both"),
    ],
)
def test_bad_watch_options_are_usage_errors(run_dir: Path, args: tuple[str, ...], message: str) -> None:
    args = tuple(str(run_dir / a) if a == "run.toml" else a for a in args)
    proc = subprocess.run(
        sgpo_cmd("eval", "--watch", str(run_dir), *args), capture_output=True, text=True, timeout=60, env=ENV
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not (run_dir / "eval.jsonl").exists()
