"""Prometheus metrics of one verifier (its own registry: no global state, two verifiers never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sgpo.core.types import VERDICT_STATUSES

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class VerifierMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.verdicts = Counter(
            "sgpo_verifier_verdicts_total",
            "Verdicts returned, by status and by the path that decided them (fast: no sympy).",
            ["status", "path"],
            registry=self.registry,
        )
        self.item_latency = Histogram(
            "sgpo_verifier_item_latency_seconds",
            "Time from a batch's arrival to each item's verdict.",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_latency = Histogram(
            "sgpo_verifier_batch_latency_seconds",
            "Time to answer one verify_batch call.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.timeouts = Counter(
            "sgpo_verifier_timeouts_total",
            "Symbolic checks killed at their deadline (reported unscorable).",
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "sgpo_verifier_worker_restarts_total",
            "Worker processes replaced: timeout, crash (died, e.g. memory limit), recycle (task limit) or "
            "cancel (its caller went away).",
            ["reason"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "sgpo_verifier_queue_depth",
            "Symbolic checks waiting for a worker.",
            registry=self.registry,
        )
        for status in VERDICT_STATUSES:
            for path in ("fast", "symbolic"):
                self.verdicts.labels(status=status, path=path)
        for reason in ("timeout", "crash", "recycle", "cancel"):
            self.worker_restarts.labels(reason=reason)
