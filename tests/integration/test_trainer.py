"""`sgpo serve trainer` as a real process on the real Redis: the TrainerService, weight publishing, dead
letters, SIGTERM, a Redis connection drop, and two trainers sharing one queue."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis

from sgpo.common.queue import GroupQueue
from sgpo.common.server import wait_for_health
from sgpo.v1 import generator_pb2, generator_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from tests.support import free_port, run_service, sgpo_cmd
from tests.unit.common.test_queue import dead_letters, wait_below_high_water
from tests.unit.trainer.fixtures import final_consumed, make_group, read_metrics, tiny_policy, trainer_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


@pytest.fixture
def generator(policy: Path, tmp_path: Path) -> Iterator[str]:
    """The real generator service (hf engine) on the same initial policy: the trainer's UpdateWeights target.

    Started without waiting (it loads while the trainer does); the test waits for its health."""
    port = free_port()
    env = {
        **os.environ,
        "SGPO_GENERATOR__PORT": str(port),
        "SGPO_GENERATOR__METRICS_PORT": "0",
        "SGPO_GENERATOR__MODEL": str(policy),
        "SGPO_GENERATOR__THREADS": "1",
        "SGPO_GENERATOR__HTTP_ENABLED": "false",
    }
    with (tmp_path / "generator.log").open("wb") as log:
        proc = subprocess.Popen(sgpo_cmd("serve", "generator"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def generator_version(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        return int(stub.GetInfo(generator_pb2.GetInfoRequest(), timeout=5).policy_version)


def wait_for(check: Callable[[], bool], timeout: float, what: str, proc: object = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and getattr(proc, "poll")() is not None:  # noqa: B009
            raise AssertionError(f"the trainer exited with {proc.poll()} while waiting for {what}")  # type: ignore[attr-defined]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def test_trainer_service_pause_resume_checkpoint_now_publish_dead_letter_and_sigterm(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str, generator: str
) -> None:
    run_dir = tmp_path / "run"
    env = trainer_env(
        policy,
        run_dir,
        redis_prefix,
        redis_url,
        batch_groups=2,
        checkpoint_every=10,
        publish_every=1,
        generator_target=generator,
    )
    queue = GroupQueue(redis_url, redis_prefix, consumer="test")
    with run_service("trainer", tmp_path, env=env) as svc, grpc.insecure_channel(svc.target) as channel:
        stub = trainer_pb2_grpc.TrainerServiceStub(channel)
        status = stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=5)
        assert (status.step, status.policy_version, status.paused, status.last_checkpoint) == (
            0,
            0,
            False,
            "",
        )
        assert stub.Pause(trainer_pb2.PauseRequest(), timeout=5).paused
        wait_for_health(generator, timeout_s=120)
        time.sleep(0.5)  # a read already in flight ends within read_block_ms (0.1 s); no new one starts
        for i in range(4):
            queue.put(make_group(f"g{i}"))
        time.sleep(1.5)
        status = stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=5)
        assert status.step == 0 and status.queue_lag == 4  # paused: nothing read, nothing trained
        assert not stub.Resume(trainer_pb2.ResumeRequest(), timeout=5).paused
        wait_for(
            lambda: stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=5).policy_version == 2,
            60,
            "2 steps published",
            svc.proc,
        )
        status = stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=5)
        assert status.step == 2 and status.groups_consumed == 4
        assert status.pending_groups == 4  # trained, not checkpointed: still unacknowledged
        assert queue.stats().pending == 4

        # Published weights: a folder per step, loaded by the generator, recorded in Redis.
        assert sorted(p.name for p in (run_dir / "weights").iterdir()) == ["v1", "v2"]
        assert generator_version(generator) == 2
        assert queue.read_policy_version() == 2

        ckpt = stub.CheckpointNow(trainer_pb2.CheckpointNowRequest(), timeout=60)
        assert ckpt.step == 2 and Path(ckpt.path) == run_dir / "checkpoints" / "step-2"
        assert (Path(ckpt.path) / "model.safetensors").is_file()
        wait_for(lambda: queue.stats().pending == 0, 10, "acknowledgements after the checkpoint")
        assert stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=5).last_checkpoint == ckpt.path

        # A group the model cannot take (token id outside its vocabulary) is dead-lettered; training goes on.
        bad = make_group("bad", vocab=5000, prompt_len=40)
        queue.put(bad)
        queue.put(make_group("g4"))
        queue.put(make_group("g5"))
        wait_for(
            lambda: stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=5).policy_version == 3,
            60,
            "step 3 published",
            svc.proc,
        )
        dead = dead_letters(queue)
        assert [d["group_id"] for d in dead] == ["bad"] and "outside the model's vocabulary" in dead[0][
            "reason"
        ]

        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics", timeout=5).read().decode()
        )
        for name in (
            "sgpo_trainer_loss",
            "sgpo_trainer_entropy_nats",
            "sgpo_trainer_clipped_tokens_ratio",
            "sgpo_trainer_throughput_tokens_per_second",
            "sgpo_trainer_zero_std_groups_ratio",
            "sgpo_trainer_colored_groups_ratio",
            "sgpo_trainer_grad_norm",
            "sgpo_trainer_kl_nats",
        ):
            assert f"\n{name} " in metrics, name
        assert "\nsgpo_trainer_step 3.0" in metrics and "\nsgpo_trainer_policy_version 3.0" in metrics
        assert 'sgpo_trainer_groups_total{outcome="dead_letter"} 1.0' in metrics
        assert "\nsgpo_trainer_publish_failures_total 0.0" in metrics  # the generator took every version
        assert svc.stop() == 0  # SIGTERM: a final checkpoint, then exit 0

    assert [ids for ids in final_consumed(run_dir)] == [["g0", "g1"], ["g2", "g3"], ["g4", "g5"]]
    steps = read_metrics(run_dir)
    assert [s["step"] for s in steps] == [1, 2, 3]
    for key in (
        "loss",
        "kl",
        "clip_fraction",
        "entropy",
        "grad_norm",
        "tokens_per_s",
        "frac_zero_std",
        "frac_colored",
        "policy_version",
    ):
        assert all(key in s for s in steps), key
    assert queue.stats().backlog == 0


def _kill_connections(redis_url: str, name: str) -> int:
    admin = redis.Redis.from_url(redis_url)
    return sum(
        int(admin.client_kill_filter(_id=c["id"])) for c in admin.client_list() if c.get("name") == name
    )


def health_statuses(target: str, proc: subprocess.Popen[bytes], until_serving_s: float = 120) -> list[str]:
    """Distinct health statuses seen, in order, from the first answer until SERVING."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    seen: list[str] = []
    deadline = time.monotonic() + until_serving_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not seen or seen[-1] != "SERVING":
            assert proc.poll() is None and time.monotonic() < deadline, f"no SERVING; saw {seen}"
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
            except grpc.RpcError:  # not bound yet
                time.sleep(0.02)
                continue
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            if not seen or seen[-1] != name:
                seen.append(name)
            time.sleep(0.02)
    return seen


def test_trainer_reconnects_after_redis_drops_its_connections_and_stops_at_max_steps(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    run_dir = tmp_path / "run"
    port = free_port()
    env = {
        **os.environ,
        **trainer_env(
            policy,
            run_dir,
            redis_prefix,
            redis_url,
            batch_groups=2,
            max_steps=3,
            checkpoint_every=1,
            read_block_ms=2000,
            port=port,
            metrics_port=0,
        ),
    }
    queue = GroupQueue(redis_url, redis_prefix, consumer="test")
    with (tmp_path / "trainer.log").open("wb") as log:
        proc = subprocess.Popen(sgpo_cmd("serve", "trainer"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Health is gated on the model: the port answers NOT_SERVING while the policy loads.
        assert health_statuses(f"127.0.0.1:{port}", proc) == ["NOT_SERVING", "SERVING"]
        queue.put(make_group("g0"))
        queue.put(make_group("g1"))
        wait_for(lambda: len(read_metrics(run_dir)) == 1, 120, "step 1", proc)
        for round_ in range(2):
            time.sleep(0.5)  # the trainer is blocked in XREADGROUP (read_block_ms = 2 s)
            assert _kill_connections(redis_url, f"sgpo-{redis_prefix}-trainer-0") >= 1
            queue.put(make_group(f"g{2 + 2 * round_}"))
            queue.put(make_group(f"g{3 + 2 * round_}"))
            wait_for(lambda n=round_: len(read_metrics(run_dir)) == n + 2, 60, f"step {round_ + 2}", proc)
        assert proc.wait(60) == 0  # max_steps = 3: the run ends by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert final_consumed(run_dir) == [["g0", "g1"], ["g2", "g3"], ["g4", "g5"]]
    assert queue.stats().backlog == 0


def test_two_trainers_share_a_queue_and_train_every_group_exactly_once(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Two trainer processes, one consumer group; a producer with backpressure. One group per step, so no
    trainer is left holding a partial batch when the producer stops."""
    n = 12
    procs, ports = {}, {"a": free_port(), "b": free_port()}
    for name in ("a", "b"):
        env = {
            **os.environ,
            **trainer_env(
                policy,
                tmp_path / name,
                redis_prefix,
                redis_url,
                batch_groups=1,
                checkpoint_every=2,
                consumer=name,
                port=ports[name],
                metrics_port=0,
            ),
        }
        with (tmp_path / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen(
                sgpo_cmd("serve", "trainer"), env=env, stdout=log, stderr=subprocess.STDOUT
            )
    queue = GroupQueue(redis_url, redis_prefix, consumer="producer", high_water=4)
    try:
        for port in ports.values():
            wait_for_health(f"127.0.0.1:{port}", timeout_s=180)
        for i in range(n):
            assert wait_below_high_water(queue, timeout=120)
            assert queue.put(make_group(f"g{i:02d}")).status == "queued"
        wait_for(
            lambda: sum(len(read_metrics(tmp_path / x)) for x in "ab") == n,
            120,
            "all groups trained",
        )
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        assert [p.wait(60) for p in procs.values()] == [0, 0]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    trained = {x: [g for ids in final_consumed(tmp_path / x) for g in ids] for x in "ab"}
    assert trained["a"] and trained["b"], trained  # both took part
    everything = trained["a"] + trained["b"]
    assert sorted(everything) == [f"g{i:02d}" for i in range(n)]  # each exactly once
    assert queue.stats().backlog == 0


def test_held_groups_are_kept_fresh_so_no_other_consumer_reclaims_them(
    policy: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """In-process trainer: trained-but-unacknowledged groups stay its own past claim_idle_ms (heartbeat)."""
    import threading

    import torch

    from sgpo.trainer.config import TrainerConfig
    from sgpo.trainer.loop import Trainer

    torch.set_num_threads(1)
    cfg = TrainerConfig(
        model_path=policy,
        run_dir=tmp_path / "run",
        run_id=redis_prefix,
        redis_url=redis_url,
        consumer="held",
        batch_groups=2,
        checkpoint_every=100,
        claim_idle_ms=1000,
        read_block_ms=100,
    )
    trainer = Trainer(cfg)
    trainer.load()
    queue = GroupQueue(redis_url, redis_prefix, consumer="thief", claim_idle_ms=1000)
    for i in range(4):
        queue.put(make_group(f"g{i}"))
    stop = threading.Event()
    worker = threading.Thread(target=trainer.run, args=(stop,))
    worker.start()
    try:
        wait_for(lambda: trainer.step == 2, 60, "2 steps")
        for _ in range(3):  # 3 s: three times the idle threshold
            time.sleep(1.0)
            assert queue.reclaim(min_idle_ms=1000) == []
        assert queue.stats().pending == 4 and trainer.status().pending_groups == 4
    finally:
        stop.set()
        worker.join(60)
    assert not worker.is_alive()
    assert queue.stats().backlog == 0  # the final checkpoint acknowledged them
    assert final_consumed(tmp_path / "run") == [["g0", "g1"], ["g2", "g3"]]
