"""Prometheus metrics of one generator instance, on its own registry (no global state: tests start it twice)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class GeneratorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sgpo_generator_requests_total",
            "Generate requests by transport (grpc | http) and status code (OK, INVALID_ARGUMENT, 400, ...).",
            ["transport", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "sgpo_generator_latency_seconds",
            "Time to answer one generate request, by transport.",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "sgpo_generator_prompt_tokens_total", "Prompt tokens of answered requests.", registry=r
        )
        self.completion_tokens = Counter(
            "sgpo_generator_completion_tokens_total", "Tokens sampled for answered requests.", registry=r
        )
        self.completions = Counter(
            "sgpo_generator_completions_total",
            "Completions returned, by finish reason (stop | length).",
            ["finish_reason"],
            registry=r,
        )
        self.policy_version = Gauge(
            "sgpo_generator_policy_version", "Version of the weights now serving.", registry=r
        )
        self.weight_updates = Counter(
            "sgpo_generator_weight_updates_total",
            "UpdateWeights calls by result (ok | rejected).",
            ["result"],
            registry=r,
        )
        self.weight_load = Histogram(
            "sgpo_generator_weight_load_seconds",
            "Time to read, check and swap in new weights.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ready = Gauge("sgpo_generator_ready", "1 once the model is loaded and serving.", registry=r)

    def observe_results(self, results: object) -> None:
        for r in results:  # type: ignore[attr-defined]
            self.prompt_tokens.inc(len(r.prompt_token_ids))
            for c in r.completions:
                self.completion_tokens.inc(len(c.token_ids))
                self.completions.labels(c.finish_reason).inc()
