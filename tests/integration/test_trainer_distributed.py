"""The trainer under torchrun: 2 processes, gloo, FSDP2 on CPU, against one process on the same groups.

Both read the same stream through their own consumer groups, so they see the same batches in the same
order. The loss trajectory must match within float tolerance (sums in another order, nothing more). The
`slow` variant stops the 2-process run at step 2 and resumes it from its FSDP checkpoint. The 2-process
model is built on the meta device and filled from rank 0's copy (sharded loading). The `bf16` variant runs
both with precision = bf16 (FSDP2's mixed-precision policy against one process's autocast) and publishes
bf16 weights: the same trajectory within bf16 rounding, and weights transformers loads as bf16.
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
    ("resume", "bf16"),
    [(False, False), pytest.param(True, False, marks=pytest.mark.slow), (False, True)],
    ids=["straight", "resumed", "bf16"],
)
def test_two_process_fsdp_loss_trajectory_matches_one_process(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str, resume: bool, bf16: bool
) -> None:
    knobs = {**KNOBS, **({"precision": "bf16", "publish_dtype": "bf16"} if bf16 else {})}
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
                **{**knobs, "max_steps": max_steps},
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
    assert {d["fsdp_mixed_precision"] for d in loaded} == {bf16}
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
        **knobs,  # type: ignore[arg-type]
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
    # bf16: FSDP computes with bf16 parameters where one process's autocast keeps fp32 weights outside matmuls
    rel = 3e-2 if bf16 else 1e-5
    for a, b in zip(fsdp, single, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=rel, abs=1e-7 + rel * 1e-2)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=10 * rel)
        assert a["entropy"] == pytest.approx(b["entropy"], rel=rel)
        assert (a["trained_seqs"], a["completion_tokens"]) == (b["trained_seqs"], b["completion_tokens"])
    assert len({m["loss"] for m in single}) == 4  # the trajectory moves

    from safetensors.torch import load_file

    wa = load_file(fsdp_dir / "checkpoints" / "step-4" / "model.safetensors")
    wb = load_file(single_dir / "checkpoints" / "step-4" / "model.safetensors")
    assert wa.keys() == wb.keys()
    # Adam divides by sqrt(v): summation-order noise in near-zero gradients moves weights by a fraction of lr.
    if not bf16:
        assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-4
    else:  # bf16 noise flips Adam's sign on near-zero gradients: compare on average, against the movement
        w0 = load_file(policy / "model.safetensors")
        diff = sum(float((wa[k] - wb[k]).abs().sum()) for k in wa)
        moved = sum(float((wb[k] - w0[k]).abs().sum()) for k in wa)
        assert diff < 0.3 * moved, (diff, moved)
    assert {v.dtype for v in wa.values()} == {torch.float32}  # checkpoints keep the fp32 master weights
    from transformers import AutoModelForCausalLM

    published = AutoModelForCausalLM.from_pretrained(fsdp_dir / "weights" / "v4", dtype="auto")
    assert published.dtype == (torch.bfloat16 if bf16 else torch.float32)
    sizes = {
        k: v.element_size() for k, v in load_file(fsdp_dir / "weights" / "v4" / "model.safetensors").items()
    }
    assert set(sizes.values()) == {2 if bf16 else 4}
