"""Asynchronous publishing: the next step trains while the generator loads the weights, one publish in flight,
and the policy version moves only once the generator holds the weights (the staleness bound's premise).

The generator here is a real gRPC server whose UpdateWeights blocks until the test releases it (a generator
slow to load), so the ordering is observed, not timed.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from sgpo.common.queue import GroupQueue
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.loop import Trainer
from sgpo.v1 import generator_pb2, generator_pb2_grpc
from tests.support import free_port
from tests.unit.trainer.fixtures import final_consumed, make_group, read_metrics, tiny_policy

pytestmark = pytest.mark.integration


class SlowGenerator(generator_pb2_grpc.GeneratorServiceServicer):
    """UpdateWeights waits for `release`; records what Redis said the policy version was when each began."""

    def __init__(self, queue: GroupQueue) -> None:
        self.queue = queue
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.calls: list[dict[str, Any]] = []

    def UpdateWeights(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            call = {"version": request.version, "redis_version_at_start": self.queue.read_policy_version()}
            self.calls.append(call)
        assert json.loads((Path(request.uri) / "config.json").read_text())["dtype"] == "bfloat16"
        self.release.wait(120)
        with self.lock:
            self.in_flight -= 1
            call["returned_at"] = time.monotonic()
        return generator_pb2.UpdateWeightsResponse(version=request.version)


def test_the_next_step_trains_while_the_generator_loads_and_versions_follow_the_generator(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    policy = tiny_policy(tmp_path / "policy")
    queue = GroupQueue(redis_url, redis_prefix, consumer="producer")
    for i in range(6):
        queue.put(make_group(f"g{i}"))
    servicer = SlowGenerator(queue)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    generator_pb2_grpc.add_GeneratorServiceServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    run_dir = tmp_path / "run"
    cfg = TrainerConfig(
        model_path=policy,
        run_dir=run_dir,
        run_id=redis_prefix,
        redis_url=redis_url,
        consumer="solo",
        read_block_ms=100,
        batch_groups=2,
        max_steps=3,
        checkpoint_every=3,
        publish_every=1,
        async_publish=True,
        publish_dtype="bf16",
        generator_target=f"127.0.0.1:{port}",
        update_weights_timeout_s=120,
    )
    trainer = Trainer(cfg)
    trainer.load()  # the initial policy is already published as v0: nothing to load
    stop = threading.Event()
    runner = threading.Thread(target=trainer.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while len(read_metrics(run_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        # Step 2 is done while UpdateWeights(v1) has not returned (it cannot: `release` is not set), so the step
        # did not wait for the generator. The publisher thread writes weights/v1 before it calls, which on a
        # loaded machine can take longer than step 2 (seen in a CI run): wait for the call.
        assert len(read_metrics(run_dir)) == 2
        while not servicer.calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [c["version"] for c in servicer.calls] == [1] and "returned_at" not in servicer.calls[0]
        # ... and nobody was told v1 is served: groups still count their staleness from v0.
        assert queue.read_policy_version() == 0 and trainer.policy_version == 0
        time.sleep(0.5)
        assert len(read_metrics(run_dir)) == 2  # at most one publish in flight: step 3 waits for v1's load
    finally:
        servicer.release.set()
        runner.join(120)
        server.stop(0)
    assert not runner.is_alive()
    assert [c["version"] for c in servicer.calls] == [1, 2, 3]
    assert servicer.max_in_flight == 1
    # Each UpdateWeights began with Redis still naming the previous version: never one the generator lacks.
    assert [c["redis_version_at_start"] for c in servicer.calls] == [0, 1, 2]
    assert queue.read_policy_version() == 3 and trainer.policy_version == 3
    lines = read_metrics(run_dir)
    # The version each step reports is the one being served while it trained: v0, v0 (v1 loading), v1 or v2.
    assert [m["policy_version"] for m in lines][:2] == [0, 0] and lines[2]["policy_version"] in (1, 2)
    assert final_consumed(run_dir) == [["g0", "g1"], ["g2", "g3"], ["g4", "g5"]]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run_dir / "weights" / "v3", dtype="auto")
    assert next(model.parameters()).dtype.is_floating_point and str(model.dtype) == "torch.bfloat16"
