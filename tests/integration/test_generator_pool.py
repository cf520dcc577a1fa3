"""Generator replicas as a pool: real `sgpo serve generator` processes, the real trainer and Redis.

- The orchestrator's pool sends each Generate to the least loaded replica that holds the policy version the
  staleness bound asks for, and passes over a replica that is down or behind.
- Every publish reaches every replica before the policy version moves in Redis (what lets the orchestrator
  sample past the staleness bound), so at any moment each replica holds at least the recorded version.
- kill -9 of one replica mid-run: training goes on (the publish to it fails and is counted), and the replica,
  started again with its initial weights, is sent the newest ones by the trainer's watch.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgpo.common.queue import GroupQueue
from sgpo.common.server import wait_for_health
from sgpo.orchestrator.clients import GeneratorPool, NoReplicaError
from sgpo.orchestrator.server import QueuePacer
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.loop import Trainer
from sgpo.v1 import common_pb2, generator_pb2
from tests.support import free_port, sgpo_cmd
from tests.unit.trainer.fixtures import make_group, tiny_policy

pytestmark = pytest.mark.integration


class Replica:
    """`sgpo serve generator` on a fixed port, so that it can be killed and started again at the same address."""

    def __init__(self, policy: Path, log_dir: Path, name: str) -> None:
        self.policy, self.log_dir, self.name = policy, log_dir, name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "SGPO_GENERATOR__MODEL": str(self.policy),
            "SGPO_GENERATOR__PORT": str(self.port),
            "SGPO_GENERATOR__METRICS_PORT": "0",
            "SGPO_GENERATOR__HTTP_ENABLED": "false",
            "SGPO_GENERATOR__THREADS": "1",
        }
        with (self.log_dir / f"{self.name}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                sgpo_cmd("serve", "generator"), env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, (self.log_dir / f"{self.name}.log").read_text()[-3000:]
            try:
                wait_for_health(self.target, timeout_s=1.0)
                return
            except TimeoutError:
                assert time.monotonic() < deadline, f"{self.name} not SERVING after 120s"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


@pytest.fixture
def replicas(policy: Path, tmp_path: Path) -> Iterator[list[Replica]]:
    pair = [Replica(policy, tmp_path, f"generator-{i}") for i in range(2)]
    try:
        for r in pair:
            r.start()
        yield pair
    finally:
        for r in pair:
            r.stop()


def trainer_config(policy: Path, run_dir: Path, run_id: str, redis_url: str, **kw: object) -> TrainerConfig:
    return TrainerConfig(
        model_path=policy,
        run_dir=run_dir,
        run_id=run_id,
        redis_url=redis_url,
        consumer="solo",
        read_block_ms=100,
        torch_threads=1,
        batch_groups=2,
        checkpoint_every=2,
        publish_every=1,
        update_weights_timeout_s=60,
        **kw,  # type: ignore[arg-type]
    )


def wait_until(cond: object, what: str, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def request(n: int = 2) -> generator_pb2.GenerateRequest:
    sampling = common_pb2.SamplingParams(n=n, temperature=1.0, top_p=1.0, max_tokens=4, seed=1)
    return generator_pb2.GenerateRequest(prompts=["1+1="], sampling=sampling)


def test_every_replica_holds_each_published_version_before_redis_names_it(
    policy: Path, replicas: list[Replica], tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    queue = GroupQueue(redis_url, redis_prefix, consumer="producer")
    for i in range(6):
        queue.put(make_group(f"g{i}"))
    cfg = trainer_config(
        policy,
        tmp_path / "run",
        redis_prefix,
        redis_url,
        max_steps=3,
        async_publish=True,
        generator_target=[r.target for r in replicas],
    )
    trainer = Trainer(cfg)
    trainer.load()
    pool = GeneratorPool([r.target for r in replicas])
    seen: list[tuple[int, dict[str, int | None]]] = []
    stop = threading.Event()
    runner = threading.Thread(target=trainer.run, args=(stop,))
    runner.start()
    try:
        while runner.is_alive():
            recorded = queue.read_policy_version()  # what the orchestrator's staleness bound reads
            seen.append((recorded, pool.versions()))
            time.sleep(0.02)
    finally:
        runner.join(120)
        pool.close()
    assert trainer.step == 3 and queue.read_policy_version() == 3
    assert {v for v, _ in seen} >= {1, 2}, "the observer missed the publishes"
    for recorded, versions in seen:
        # read after Redis: each replica holds that version or a newer one, never an older one
        assert all(v is not None and v >= recorded for v in versions.values()), (recorded, versions)
    assert set(GeneratorPool([r.target for r in replicas]).versions().values()) == {3}
    assert trainer.metrics.publish_failures._value.get() == 0


def test_pool_balances_by_outstanding_calls_and_passes_over_replicas_behind_or_down(
    replicas: list[Replica], redis_url: str, redis_prefix: str
) -> None:
    from sgpo.v1 import generator_pb2_grpc

    pool = GeneratorPool([r.target for r in replicas], wait_s=1.0, poll_s=0.1)
    try:
        # equally loaded: calls alternate; one held open: the next two go to the other replica first
        first, second = pool.acquire(), pool.acquire()
        assert {first.target, second.target} == {r.target for r in replicas}
        pool.release(second)
        third = pool.acquire()
        assert third.target == second.target
        pool.release(third)
        pool.release(first)
        out = pool.generate(request(), timeout=60)
        assert len(out.results) == 1 and len(out.results[0].completions) == 2

        # replica 0 at version 5 (weights of its own initial folder), replica 1 still at 0
        import grpc

        with grpc.insecure_channel(replicas[0].target) as ch:
            generator_pb2_grpc.GeneratorServiceStub(ch).UpdateWeights(
                generator_pb2.UpdateWeightsRequest(version=5, uri=str(replicas[0].policy)), timeout=60
            )
        # the staleness bound for step 6 with a lag of 1 asks for version 5: only replica 0 may serve it
        queue = GroupQueue(redis_url, redis_prefix)
        min_version = QueuePacer(queue, batch_groups=2, max_policy_lag=1).min_version(groups_ahead=13)
        assert min_version == 5
        targets = set()
        for _ in range(4):
            r = pool.acquire(min_version)
            targets.add(r.target)
            pool.release(r)
        assert targets == {replicas[0].target}
        out = pool.generate(request(), timeout=60, min_version=min_version)
        assert {c.policy_version for c in out.results[0].completions} == {5}

        # replica 0 down: nothing holds version 5 -> UNAVAILABLE after wait_s (the caller retries); version 0 ok
        replicas[0].kill9()
        with pytest.raises(NoReplicaError, match=r"policy version >= 5.*down"):
            pool.acquire(min_version)
        assert pool.acquire(0).target == replicas[1].target
    finally:
        pool.close()


def test_a_replica_killed_mid_run_comes_back_with_the_newest_weights(
    policy: Path, replicas: list[Replica], tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    queue = GroupQueue(redis_url, redis_prefix, consumer="producer")
    cfg = trainer_config(
        policy,
        tmp_path / "run",
        redis_prefix,
        redis_url,
        max_steps=4,
        replica_check_s=0.3,
        generator_target=[r.target for r in replicas],
    )
    trainer = Trainer(cfg)
    trainer.load()
    pool = GeneratorPool([r.target for r in replicas])
    stop = threading.Event()
    runner = threading.Thread(target=trainer.run, args=(stop,))
    runner.start()

    def feed(step: int) -> None:  # the two groups of trainer step `step`
        for i in (2 * step - 2, 2 * step - 1):
            queue.put(make_group(f"g{i}"))

    try:
        feed(1)
        wait_until(lambda: queue.read_policy_version() == 1, "v1")
        replicas[1].kill9()
        feed(2)
        wait_until(lambda: queue.read_policy_version() == 2, "v2 with a replica down")
        assert pool.versions() == {replicas[0].target: 2, replicas[1].target: None}
        assert trainer.metrics.publish_failures._value.get() >= 1
        replicas[1].start()  # back with its initial weights (version 0) at the same address
        wait_until(lambda: pool.versions()[replicas[1].target] == 2, "the restarted replica to catch up")
        feed(3)
        feed(4)
        runner.join(180)
    finally:
        stop.set()
        runner.join(60)
        pool.close()
    assert not runner.is_alive() and trainer.step == 4
    assert trainer.replicas is not None and trainer.replicas.catch_ups >= 1
    assert set(GeneratorPool([r.target for r in replicas]).versions().values()) == {4}
