"""`sgpo serve orchestrator`: the loop as a service with health, metrics and a graceful stop.

It reports SERVING once Redis answers, and NOT_SERVING while it does not (the loop waits through the outage
and resumes); SIGTERM lets the chunks in flight finish (whole groups only) and exits. When the dataset's
epochs are done it exits 0 by itself.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import redis

from sgpo.common.queue import GroupQueue, PutResult, redact_url
from sgpo.common.server import serve_grpc
from sgpo.core import Group
from sgpo.orchestrator.clients import Clients
from sgpo.orchestrator.config import OrchestratorConfig
from sgpo.orchestrator.loop import Orchestrator
from sgpo.orchestrator.metrics import OrchestratorMetrics

log = logging.getLogger(__name__)


class QueuePacer:
    """Backpressure (groups waiting for the trainer below the high-water mark) and the staleness bound."""

    def __init__(
        self, queue: GroupQueue, batch_groups: int, max_policy_lag: int, poll_s: float = 0.2
    ) -> None:
        self.queue, self.batch_groups, self.max_policy_lag, self.poll_s = (
            queue,
            batch_groups,
            max_policy_lag,
            poll_s,
        )

    def min_version(self, groups_ahead: int) -> int:
        """The staleness bound: groups for trainer step s come from policy version >= s - max_policy_lag."""
        step = (
            max(groups_ahead - 1, 0) // self.batch_groups
        )  # the trainer step that will consume these groups
        return step - self.max_policy_lag

    def ready(self, groups_ahead: int) -> bool:
        return (
            self.queue.read_policy_version() >= self.min_version(groups_ahead)
            and self.queue.waiting() < self.queue.high_water
        )


class QueueSink:
    """The Redis queue as the loop's durable sink (`sgpo.orchestrator.loop.DurableSink`)."""

    errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    def __init__(self, queue: GroupQueue) -> None:
        self.queue = queue
        self.progress_key = f"sgpo:{queue.run_id}:progress"

    def put(self, group: Group) -> PutResult:
        result = self.queue.put(group)
        if result.status == "duplicate":
            # queued before (by this slot before a restart): its entry is at or below the stream's newest
            return PutResult("duplicate", self.queue.last_entry_id())
        if result.status != "queued":
            log.warning("group not queued", extra={"group_id": group.group_id, "status": result.status})
        return result

    def missing(self, group_ids: Sequence[str]) -> list[str]:
        return self.queue.missing(group_ids)

    def acked_frontier(self) -> tuple[int, int]:
        return self.queue.acked_frontier()

    def load_progress(self) -> dict[str, Any] | None:
        raw = self.queue.client.get(self.progress_key)
        return None if raw is None else dict(json.loads(raw))

    def save_progress(self, progress: dict[str, Any]) -> None:
        self.queue.client.set(self.progress_key, json.dumps(progress))


def serve(cfg: OrchestratorConfig) -> None:
    metrics = OrchestratorMetrics()
    queue = GroupQueue(
        cfg.redis_url,
        cfg.run_id,
        high_water=cfg.high_water,
        consumer="orchestrator",
        password_file=cfg.redis_password_file,
    )
    clients = Clients(
        cfg.generator_target, cfg.verifier_target, cfg.judge_target, replica_wait_s=cfg.replica_wait_s
    )
    orchestrator = Orchestrator(
        cfg,
        QueueSink(queue),
        clients=clients,
        pacer=QueuePacer(queue, cfg.batch_groups, cfg.max_policy_lag),
        metrics=metrics,
        stats_path=cfg.stats_path,
        current_version=queue.read_policy_version,
    )

    def register(server: grpc.Server) -> Iterable[str]:
        return ["sgpo.v1.Orchestrator"]

    def load() -> None:
        log.info("queue", extra={"redis": redact_url(cfg.redis_url), "run_id": cfg.run_id})
        queue.client.ping()  # SERVING only once Redis answers

    def healthy() -> bool:
        return orchestrator.queue_ok.is_set() and queue.reachable()

    def main(stop: threading.Event) -> None:
        orchestrator.stop = stop
        stats = orchestrator.run()
        if stats.stopped_reason:
            log.error("orchestrator stopped the run: %s", stats.stopped_reason)
        log.info("orchestrator done", extra={"enqueued": stats.enqueued, "by_kind": stats.by_kind})

    def close() -> None:
        clients.close()
        queue.close()

    serve_grpc(cfg, register, registry=metrics.registry, load=load, main=main, on_stop=close, healthy=healthy)
