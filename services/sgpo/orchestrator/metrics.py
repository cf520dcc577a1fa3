"""Orchestrator metrics on the service's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class OrchestratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.groups = Counter(
            "sgpo_orchestrator_groups_total",
            "Groups by kind: all_negative/all_positive/mixed/unscorable (as enqueued), colored, uncolorable "
            "(needed coloring, judge failed), filtered (dropped by dynamic sampling), failed (a service failed for good)",
            ["kind"],
            registry=r,
        )
        self.reward = Histogram(
            "sgpo_orchestrator_group_reward_mean",
            "Mean reward of an enqueued group",
            registry=r,
            buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
        )
        self.accuracy = Histogram(
            "sgpo_orchestrator_group_accuracy_ratio",
            "Share of correct completions in an enqueued group",
            registry=r,
            buckets=(0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
        )
        self.latency = Histogram(
            "sgpo_orchestrator_call_latency_seconds",
            "Latency of calls to the services",
            ["service"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.retries = Counter("sgpo_orchestrator_retries_total", "Retried calls", ["service"], registry=r)
        self.tokens = Counter(
            "sgpo_orchestrator_tokens_generated_total", "Completion tokens generated", registry=r
        )
        self.policy_lag = Gauge(
            "sgpo_orchestrator_policy_lag_versions",
            "Trainer policy version minus the version that generated the last enqueued group",
            registry=r,
        )
        self.paused = Gauge(
            "sgpo_orchestrator_paused", "1 while waiting on backpressure or staleness", registry=r
        )
        self.judgements = Counter(
            "sgpo_orchestrator_judgements_total",
            "Responses sent to the judge, by outcome (ok | failed: the call failed or timed out, or the judgement "
            "failed).",
            ["outcome"],
            registry=r,
        )
        self.judge_failed_ratio = Gauge(
            "sgpo_orchestrator_judge_failed_ratio",
            "Share of failed judgements over the alarm window (judge_alarm.window responses).",
            registry=r,
        )
        self.judge_alarm = Gauge(
            "sgpo_orchestrator_judge_alarm",
            "1 while the failed share passes judge_alarm.max_failed_share (SGPO is degrading to GRPO).",
            registry=r,
        )
        self.truncated = Counter(
            "sgpo_orchestrator_truncated_completions_total",
            "Completions of enqueued groups cut by max_tokens (finish_reason = length).",
            registry=r,
        )
