"""kill -9 of `sgpo serve trainer` at random points and at every step of a checkpoint, then restart.

Each run checks that the final checkpoint holds every produced group exactly once (its per-step id list
has no duplicate and covers the produced set), that the queue holds nothing unacknowledged, and that
replaying the checkpoint's batches in order on a fresh policy reproduces its weights bit for bit: the
lost steps of the killed processes left no trace. The CI version kills twice (mid-checkpoint, and between
a durable checkpoint and its acknowledgements) and restarts under another consumer name (XAUTOCLAIM path);
the `slow` version kills 24 times.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from sgpo.common.queue import GroupQueue
from sgpo.core import Group
from sgpo.trainer.checkpoint import latest_checkpoint
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.engine import TrainEngine
from tests.support import sgpo_cmd
from tests.unit.trainer.fixtures import final_consumed, make_group, read_metrics, tiny_policy, trainer_env

pytestmark = pytest.mark.integration

BATCH = 2
KNOBS = {"batch_groups": BATCH, "checkpoint_every": 2, "publish_every": 3, "keep_checkpoints": 2, "lr": 0.01}
FAILPOINTS = (
    "checkpoint.before=1",
    "checkpoint.written=1",  # temp folder complete, not renamed
    "checkpoint.renamed=1",  # durable, groups not yet acknowledged
    "checkpoint.acked=1",
    "publish.written=1",
    "step.done=1",
)


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


class Run:
    def __init__(self, policy: Path, tmp_path: Path, redis_url: str, run_id: str) -> None:
        self.policy, self.tmp, self.redis_url, self.run_id = policy, tmp_path, redis_url, run_id
        self.run_dir = tmp_path / "run"
        self.queue = GroupQueue(redis_url, run_id, consumer="producer")
        self.produced: dict[str, Group] = {}
        self.starts = 0

    def produce(self, k: int) -> None:
        for _ in range(k):
            g = make_group(f"g{len(self.produced):03d}", size=3, completion_len=(3, 12))
            assert self.queue.put(g).status == "queued"
            self.produced[g.group_id] = g

    def start(self, consumer: str, failpoints: str = "", **fields: object) -> subprocess.Popen[bytes]:
        self.starts += 1
        env = {
            **os.environ,
            **trainer_env(
                self.policy,
                self.run_dir,
                self.run_id,
                self.redis_url,
                consumer=consumer,
                claim_idle_ms=1000,
                port=0,
                metrics_port=0,
                **KNOBS,
                **fields,
            ),
            "SGPO_FAILPOINTS": failpoints,
        }
        with (self.tmp / f"trainer-{self.starts}.log").open("wb") as log:
            return subprocess.Popen(
                sgpo_cmd("serve", "trainer"), env=env, stdout=log, stderr=subprocess.STDOUT
            )

    def log(self) -> str:
        return (self.tmp / f"trainer-{self.starts}.log").read_text(errors="replace")[-3000:]


def _wait_exit(proc: subprocess.Popen[bytes], run: Run, timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"trainer still running after {timeout}s:\n{run.log()}") from None


def crash_cycle(run: Run, kill: str, consumer: str, rng: random.Random) -> None:
    """Start a trainer and kill -9 it: at a failpoint, at a random time while training, or while loading."""
    if kill in FAILPOINTS:
        proc = run.start(consumer, failpoints=kill)
        code = _wait_exit(proc, run, 180)
        assert code == -signal.SIGKILL, (
            f"expected the failpoint {kill} to kill the trainer; exit {code}:\n{run.log()}"
        )
        return
    proc = run.start(consumer)
    if kill == "loading":
        time.sleep(rng.uniform(0.5, 4.0))
    else:  # "training": once a step is done in this process, at a random moment
        lines = len(read_metrics(run.run_dir))
        deadline = time.monotonic() + 180
        while len(read_metrics(run.run_dir)) == lines and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
    assert proc.poll() is None, f"the trainer exited on its own ({proc.returncode}):\n{run.log()}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def finish_and_check(run: Run, consumer: str) -> None:
    """Restart cleanly; with max_steps = groups / batch it ends only if every group is trained exactly once."""
    total_steps = len(run.produced) // BATCH
    proc = run.start(consumer, max_steps=total_steps)
    assert _wait_exit(proc, run, 300) == 0, run.log()

    consumed = final_consumed(run.run_dir)
    flat = [g for ids in consumed for g in ids]
    assert len(flat) == len(set(flat)), "a group was trained twice"
    assert set(flat) == set(run.produced), "the final checkpoint does not hold exactly the produced groups"
    assert len(consumed) == total_steps
    stats = run.queue.stats()
    assert (stats.pending, stats.lag, stats.dead) == (0, 0, 0)

    # Replay the checkpoint's batches on a fresh policy: the same weights, to the bit.
    from safetensors.torch import load_file

    torch.set_num_threads(1)  # as the trainer processes (TORCH_THREADS=1): the same float summation order
    engine = TrainEngine(TrainerConfig(model_path=run.policy, **KNOBS))  # type: ignore[arg-type]
    engine.load(run.policy)
    for step, ids in enumerate(consumed):
        engine.train_step([run.produced[g] for g in ids], step)
    ckpt = latest_checkpoint(run.run_dir)
    assert ckpt is not None
    saved = load_file(ckpt / "model.safetensors")
    replayed = {k: v for k, v in engine.model.state_dict().items() if k in saved}
    assert replayed.keys() == saved.keys()
    worst = max(float((replayed[k] - saved[k]).abs().max()) for k in saved)
    assert worst == 0.0, f"replayed weights differ from the checkpoint by up to {worst}"


def test_kill_9_mid_checkpoint_and_before_ack_then_resume_under_another_name(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    run = Run(policy, tmp_path, redis_url, redis_prefix)
    rng = random.Random(0)
    run.produce(8)
    crash_cycle(run, "checkpoint.written=1", "trainer-0", rng)
    crash_cycle(run, "checkpoint.renamed=1", "trainer-0", rng)
    run.produce(4)
    # A new consumer name: trainer-0's unacknowledged groups come back through XAUTOCLAIM after 1 s idle.
    finish_and_check(run, "trainer-1")


@pytest.mark.slow
def test_kill_9_at_random_points_24_times(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    run = Run(policy, tmp_path, redis_url, redis_prefix)
    rng = random.Random(int(os.environ.get("SGPO_CRASH_SEED", "1234")))
    kinds = [*FAILPOINTS, "training", "training", "loading"]
    plan = [kinds[i % len(kinds)] for i in range(24)]
    rng.shuffle(plan)
    run.produce(6)
    for i, kill in enumerate(plan):
        crash_cycle(run, kill, "trainer-0" if i % 6 else "trainer-1", rng)
        run.produce(rng.choice([2, 4]))
    finish_and_check(run, "trainer-0")
