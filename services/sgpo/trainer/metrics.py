"""Trainer metrics on the service's own Prometheus registry (no global state; a test can start two)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.step = Gauge(
            "sgpo_trainer_step", "Optimizer steps done (resumes from the checkpoint)", registry=r
        )
        self.policy_version = Gauge(
            "sgpo_trainer_policy_version", "Version (step) of the weights published last", registry=r
        )
        self.loss = Gauge("sgpo_trainer_loss", "Policy loss of the last step (docs/design.md §1)", registry=r)
        self.kl = Gauge("sgpo_trainer_kl_nats", "Mean k3 KL to the reference per trained token", registry=r)
        self.clip = Gauge(
            "sgpo_trainer_clipped_tokens_ratio",
            "Share of trained tokens where the PPO clip was active",
            registry=r,
        )
        self.entropy = Gauge("sgpo_trainer_entropy_nats", "Mean policy entropy per trained token", registry=r)
        self.grad_norm = Gauge("sgpo_trainer_grad_norm", "Global gradient norm before clipping", registry=r)
        self.lr = Gauge("sgpo_trainer_learning_rate", "Learning rate of the last step", registry=r)
        self.tokens_per_s = Gauge(
            "sgpo_trainer_throughput_tokens_per_second",
            "Sequence tokens (prompt + completion) forwarded and backpropagated per second in the last step",
            registry=r,
        )
        self.zero_std = Gauge(
            "sgpo_trainer_zero_std_groups_ratio",
            "Share of the last step's groups whose advantages are all 0",
            registry=r,
        )
        self.colored = Gauge(
            "sgpo_trainer_colored_groups_ratio",
            "Share of the last step's groups colored by the judge",
            registry=r,
        )
        self.step_seconds = Histogram(
            "sgpo_trainer_step_seconds", "Wall time of one optimizer step", registry=r, buckets=STEP_BUCKETS
        )
        self.checkpoint_seconds = Histogram(
            "sgpo_trainer_checkpoint_seconds",
            "Wall time of writing one checkpoint",
            registry=r,
            buckets=STEP_BUCKETS,
        )
        self.groups = Counter(
            "sgpo_trainer_groups_total",
            "Groups by outcome: trained, duplicate (already trained; acknowledged, skipped), dead_letter",
            ["outcome"],
            registry=r,
        )
        self.tokens = Counter("sgpo_trainer_tokens_total", "Completion tokens trained on", registry=r)
        self.queue_lag = Gauge(
            "sgpo_trainer_queue_lag_groups", "Groups queued and not yet delivered to a trainer", registry=r
        )
        self.queue_pending = Gauge(
            "sgpo_trainer_queue_pending_groups",
            "Groups delivered to trainers and not yet acknowledged",
            registry=r,
        )
        self.queue_dead = Gauge(
            "sgpo_trainer_queue_dead_groups", "Entries in the dead-letter stream", registry=r
        )
        self.redis_errors = Counter(
            "sgpo_trainer_redis_errors_total",
            "Redis calls that failed after retries (the trainer keeps going)",
            registry=r,
        )
        self.publish_failures = Counter(
            "sgpo_trainer_publish_failures_total",
            "UpdateWeights calls to the generator that failed",
            registry=r,
        )
        self.paused = Gauge("sgpo_trainer_paused", "1 while paused through the TrainerService", registry=r)
