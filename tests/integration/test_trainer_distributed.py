"""The trainer under torchrun: 2 processes, gloo, FSDP2 on CPU, against one process on the same groups.

Both read the same stream through their own consumer groups, so they see the same batches in the same
order. The loss trajectory must match within float tolerance (sums in another order, nothing more). The
`slow` variant stops the 2-process run at step 2 and resumes it from its FSDP checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from sgpo.common.queue import GroupQueue
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.loop import Trainer
from tests.support import free_port
from tests.unit.trainer.fixtures import final_consumed, make_group, read_metrics, tiny_policy, trainer_env

pytestmark = pytest.mark.integration

KNOBS = {"batch_groups": 2, "micro_batch_size": 2, "checkpoint_every": 2, "publish_every": 4, "max_steps": 4}


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


@pytest.mark.parametrize(
    "resume", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["straight", "resumed"]
)
def test_two_process_fsdp_loss_trajectory_matches_one_process(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str, resume: bool
) -> None:
    queue = GroupQueue(redis_url, redis_prefix, consumer="producer")
    # Both consumer groups exist before anything is acknowledged: trimming keeps what either still needs.
    for group in ("fsdp", "single"):
        GroupQueue(redis_url, redis_prefix, consumer_group=group).ensure_consumer_group()
    # 3 completions per group: odd sequence counts leave one rank a zero-weight micro-batch.
    for i in range(8):
        queue.put(make_group(f"g{i}", size=3, completion_len=(3, 14)))

    fsdp_dir = tmp_path / "fsdp"
    loaded = []
    # resumed: a first run stops at step 2; the second resumes its FSDP checkpoint (optimizer broadcast from rank 0)
    for max_steps in (2, 4) if resume else (4,):
        env = {
            **os.environ,
            **trainer_env(
                policy,
                fsdp_dir,
                redis_prefix,
                redis_url,
                consumer_group="fsdp",
                port=0,
                metrics_port=0,
                **{**KNOBS, "max_steps": max_steps},
            ),
        }
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            "-m",
            "sgpo.cli",
            "serve",
            "trainer",
        ]
        log_path = tmp_path / f"torchrun-{max_steps}.log"
        with log_path.open("wb") as log:
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=400)
        log_text = log_path.read_text(errors="replace")
        assert proc.returncode == 0, log_text[-4000:]
        loaded += [json.loads(ln) for ln in log_text.splitlines() if '"msg": "model loaded"' in ln]
    assert {d["world"] for d in loaded} == {2}  # rank 0 logs for both ranks, each holding a shard
    assert ('"msg": "resumed"' in log_text) == resume

    torch.set_num_threads(1)
    single_dir = tmp_path / "single"
    cfg = TrainerConfig(
        model_path=policy,
        run_dir=single_dir,
        run_id=redis_prefix,
        redis_url=redis_url,
        consumer_group="single",
        consumer="solo",
        read_block_ms=100,
        lr=0.001,
        **KNOBS,
    )
    trainer = Trainer(cfg)
    trainer.load()
    stop = threading.Event()
    timer = threading.Timer(240, stop.set)  # a lost group would leave it waiting: fail instead of hanging
    timer.start()
    try:
        trainer.run(stop)
    finally:
        timer.cancel()

    assert (
        final_consumed(fsdp_dir)
        == final_consumed(single_dir)
        == [[f"g{2 * s}", f"g{2 * s + 1}"] for s in range(4)]
    )
    fsdp, single = read_metrics(fsdp_dir), read_metrics(single_dir)
    assert [m["step"] for m in fsdp] == [m["step"] for m in single] == [1, 2, 3, 4]
    for a, b in zip(fsdp, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["entropy"] == pytest.approx(b["entropy"], rel=1e-5)
        assert (a["trained_seqs"], a["completion_tokens"]) == (b["trained_seqs"], b["completion_tokens"])
    assert len({m["loss"] for m in single}) == 4  # the trajectory moves

    from safetensors.torch import load_file

    wa = load_file(fsdp_dir / "checkpoints" / "step-4" / "model.safetensors")
    wb = load_file(single_dir / "checkpoints" / "step-4" / "model.safetensors")
    assert wa.keys() == wb.keys()
    # Adam divides by sqrt(v): summation-order noise in near-zero gradients moves weights by a fraction of lr.
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    assert (fsdp_dir / "weights" / "v4" / "model.safetensors").is_file()
