"""Prometheus metrics of one judge instance, on its own registry (no global state: tests start it twice)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
STEP_BUCKETS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 30, 50)


class JudgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_latency = Histogram(
            "sgpo_judge_latency_seconds",
            "Time to answer one Judge request (one group), by transport.",
            ["transport"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "sgpo_judge_requests_total",
            "Judge requests by transport and status code (OK, INVALID_ARGUMENT, 401, 413, ...).",
            ["transport", "code"],
            registry=r,
        )
        self.judgements = Counter(
            "sgpo_judge_judgements_total",
            "Responses judged, by backend and outcome (error_found | no_error | failed).",
            ["backend", "outcome"],
            registry=r,
        )
        self.first_error_step = Histogram(
            "sgpo_judge_first_error_step",
            "0-based index of the first wrong step, for responses where one was found.",
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.rts = Histogram(
            "sgpo_judge_rts_ratio",
            "Reasoning-trajectory score (share of the response before its first error) of judged responses.",
            buckets=(0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.llm_calls = Counter(
            "sgpo_judge_llm_calls_total",
            "Critiques asked of the LLM endpoint, by outcome (ok | unparseable | out_of_range | http_error | "
            "timeout | connection_error | malformed | truncated | config_error | cache_hit | redis_hit | joined).",
            ["outcome"],
            registry=r,
        )
        self.llm_call_latency = Histogram(
            "sgpo_judge_llm_call_seconds",
            "Time of one LLM critique, retries included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.llm_retries = Counter(
            "sgpo_judge_llm_retries_total", "Retried LLM requests (timeouts, 429, 5xx).", registry=r
        )
        self.llm_config_errors = Counter(
            "sgpo_judge_llm_config_errors_total",
            "HTTP 400s naming a request parameter (a request profile the endpoint rejects: every critique fails "
            "until the config is fixed), by parameter.",
            ["param"],
            registry=r,
        )
        self.llm_tokens = Counter(
            "sgpo_judge_llm_tokens_total",
            "Tokens billed by the LLM endpoint (its replies' usage), by kind (prompt | completion).",
            ["kind"],
            registry=r,
        )
        self.llm_cost = Counter(
            "sgpo_judge_llm_cost_total",
            "Cost of the LLM critiques at the configured price per million tokens (0 when no price is set).",
            registry=r,
        )
        self.llm_rate_limit_wait = Counter(
            "sgpo_judge_llm_rate_limit_wait_seconds_total",
            "Time requests waited for the requests-per-minute and tokens-per-minute limits.",
            registry=r,
        )
        self.cascade_llm_calls_saved = Counter(
            "sgpo_judge_cascade_llm_calls_saved_total",
            "Responses the cascade settled with the symbolic checker (an arithmetic error), so the LLM was not asked.",
            registry=r,
        )
        self.ready = Gauge("sgpo_judge_ready", "1 once the backend is loaded and serving.", registry=r)
