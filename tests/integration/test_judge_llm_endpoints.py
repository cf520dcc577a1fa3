"""The `llm` backend against real local OpenAI-compatible servers.

- A FastAPI/uvicorn server that behaves like OpenAI's reasoning-model endpoint (o-series): HTTP 400 with an
  OpenAI-shaped error naming the parameter for `temperature` and `max_tokens`, `max_completion_tokens`
  required, `reasoning_effort` accepted, `usage` in every reply; it records each request's body and arrival
  time. The remote LLM itself cannot run here: this server is the test double at that boundary.
- The project's own generator (`sgpo serve generator` with the tiny policy): the policy as its own judge.

Rate limits are checked on the server's arrival times; the Redis cache with the real Redis.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sgpo.judge.config import JudgeConfig, LlmBackend
from sgpo.judge.judge import build_judge
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.types import JudgeItem
from tests.support import SHARED_DATA, free_port, run_service

pytestmark = pytest.mark.integration

STEPS = ("Tom has 3 * 12 = 36 pencils.", "He gives away 5 and keeps 36 - 5 = 31.", "The answer is 31.")
USAGE = {"prompt_tokens": 400, "completion_tokens": 100}


class ReasoningEndpoint:
    """OpenAI's reasoning-model contract; `SCRIPT:<name>` in the prompt picks the answer."""

    def __init__(self) -> None:
        import uvicorn

        self.bodies: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        app = FastAPI()

        def error(param: str, message: str, code: str) -> JSONResponse:
            body = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
            return JSONResponse(status_code=400, content={"error": body})

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            with self.lock:
                self.bodies.append(body)
                self.arrivals.append(time.monotonic())
            if "max_tokens" in body:
                return error(
                    "max_tokens",
                    "Unsupported parameter: 'max_tokens' is not supported with this model. "
                    "Use 'max_completion_tokens' instead.",
                    "unsupported_parameter",
                )
            if "temperature" in body:
                return error(
                    "temperature",
                    "Unsupported value: 'temperature' does not support 0.0 with this model. "
                    "Only the default (1) value is supported.",
                    "unsupported_value",
                )
            if not isinstance(body.get("max_completion_tokens"), int):
                return error("max_completion_tokens", "max_completion_tokens is required", "missing")
            prompt = body["messages"][-1]["content"]
            script = prompt.split("SCRIPT:", 1)[1].split()[0] if "SCRIPT:" in prompt else "ok:1"
            if script == "slow":
                import asyncio

                await asyncio.sleep(0.6)
                script = "ok:1"
            if script == "think_forever":
                message: dict[str, Any] = {"role": "assistant", "content": None}
                finish = "length"
            else:
                message = {"role": "assistant", "content": f"Thought it through. \\boxed{{{script[3:]}}}"}
                finish = "stop"
            usage = {**USAGE, "total_tokens": sum(USAGE.values())}
            return {
                "id": "r",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            }

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the reasoning endpoint did not start"
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ReasoningEndpoint]:
    server = ReasoningEndpoint()
    yield server
    server.close()


def cfg(url: str, **kw: Any) -> LlmBackend:
    base: dict[str, Any] = dict(base_url=url, model="o4-mini", backoff_s=0.01, backoff_max_s=0.05)
    return LlmBackend(**{**base, **kw})


def judge_one(judge: Any, script: str, steps: tuple[str, ...] = STEPS) -> Any:
    (j,) = judge.judge(f"SCRIPT:{script} How many pencils are left?", "", [JudgeItem(steps=steps)])
    return j


def test_chat_profile_against_a_reasoning_endpoint_is_a_loud_config_error(
    endpoint: ReasoningEndpoint, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = JudgeMetrics()
    judge = build_judge(JudgeConfig(backend=cfg(endpoint.url, model="chat-profile")), metrics)
    with caplog.at_level(logging.ERROR, logger="sgpo.judge.llm"):
        j = judge_one(judge, "ok:1")
        judge_one(judge, "ok:2")
    assert j.status == "failed" and j.reason.startswith("configuration error:")
    assert "'max_tokens'" in j.reason and 'set profile = "reasoning"' in j.reason
    # Counted by parameter, once per request; logged once (not once per item) with the fix.
    assert (
        metrics.registry.get_sample_value("sgpo_judge_llm_config_errors_total", {"param": "max_tokens"}) == 2
    )
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and getattr(errors[0], "param", None) == "max_tokens"
    assert judge.stats()["llm_config_errors"] == 2
    judge.close()


def test_reasoning_profile_sends_what_the_endpoint_takes_and_counts_tokens_and_cost(
    endpoint: ReasoningEndpoint,
) -> None:
    metrics = JudgeMetrics()
    backend = cfg(
        endpoint.url,
        model="reasoning-profile",
        profile="reasoning",
        reasoning_effort="low",
        max_tokens=20000,
        extra_body={"seed": 7},
        price_prompt_per_mtok=1.1,
        price_completion_per_mtok=4.4,
    )
    judge = build_judge(JudgeConfig(backend=backend), metrics)
    n0 = len(endpoint.bodies)
    assert judge_one(judge, "ok:1").first_error_step == 1
    body = endpoint.bodies[n0]
    assert {k: body[k] for k in ("max_completion_tokens", "reasoning_effort", "seed")} == {
        "max_completion_tokens": 20000,
        "reasoning_effort": "low",
        "seed": 7,
    }
    assert "temperature" not in body and "max_tokens" not in body
    assert metrics.registry.get_sample_value("sgpo_judge_llm_tokens_total", {"kind": "prompt"}) == 400
    assert metrics.registry.get_sample_value("sgpo_judge_llm_tokens_total", {"kind": "completion"}) == 100
    cost = (400 * 1.1 + 100 * 4.4) / 1e6
    assert metrics.registry.get_sample_value("sgpo_judge_llm_cost_total") == pytest.approx(cost)
    stats = judge.stats()
    assert (stats["llm_prompt_tokens"], stats["llm_completion_tokens"]) == (400, 100)
    assert stats["llm_cost"] == pytest.approx(cost)
    # A reasoning model that spends the whole budget thinking: a failure that says what to raise.
    j = judge_one(judge, "think_forever")
    assert j.status == "failed" and "truncated" in j.reason and "max_tokens = 20000" in j.reason
    judge.close()


def test_identical_requests_in_flight_are_sent_once(endpoint: ReasoningEndpoint) -> None:
    """A group re-sent after the orchestrator's deadline joins the critiques still in flight."""
    judge = build_judge(JudgeConfig(backend=cfg(endpoint.url, model="flight", profile="reasoning")))
    n0 = len(endpoint.bodies)
    items = [JudgeItem(steps=(*STEPS[:2], f"So {k} pencils.")) for k in range(3)]
    out: list[Any] = []
    threads = [
        threading.Thread(target=lambda: out.append(judge.judge("SCRIPT:slow pencils", "", items)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(endpoint.bodies) - n0 == 3
    assert [j.first_error_step for j in out[0]] == [j.first_error_step for j in out[1]] == [1, 1, 1]
    assert judge.stats()["llm_joined"] + judge.stats()["llm_cache_hits"] == 3
    judge.close()


def test_requests_per_minute_hold_under_concurrent_load(endpoint: ReasoningEndpoint) -> None:
    rpm = 120.0  # 2 per second, bursts of 2
    judge = build_judge(
        JudgeConfig(
            backend=cfg(
                endpoint.url, model="rpm", profile="reasoning", max_requests_per_minute=rpm, max_concurrency=8
            )
        )
    )
    n0 = len(endpoint.bodies)
    groups = [[JudgeItem(steps=(*STEPS[:2], f"Group {g} item {k}.")) for k in range(4)] for g in range(3)]
    threads = [threading.Thread(target=judge.judge, args=("SCRIPT:ok:0 load", "", g)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    arrivals = sorted(endpoint.arrivals[n0:])
    assert len(arrivals) == 12
    rate, burst = rpm / 60, 2
    # A token bucket admits at most burst + rate * T requests in any T seconds. The server sees them a transit
    # time later, which a loaded machine stretches unevenly (requests can arrive bunched): 2 requests of slack.
    # Without the limit all 12 arrive within a fraction of a second and this fails.
    for i, a in enumerate(arrivals):
        for j in range(i + 1, len(arrivals)):
            span = arrivals[j] - a
            assert j - i + 1 <= burst + rate * span + 2, (i, j, span)
    assert judge.stats()["llm_rate_limit_wait_s"] > 0
    judge.close()


def test_tokens_per_minute_hold_under_concurrent_load(endpoint: ReasoningEndpoint) -> None:
    tpm = 60_000.0  # 1000 tokens per second; each reply bills 500
    judge = build_judge(
        JudgeConfig(
            backend=cfg(
                endpoint.url,
                model="tpm",
                profile="reasoning",
                max_tokens_per_minute=tpm,
                max_concurrency=8,
                max_tokens=1000,
            )
        )
    )
    n0 = len(endpoint.bodies)
    items = [JudgeItem(steps=(*STEPS[:2], f"Item {k}.")) for k in range(12)]
    judge.judge("SCRIPT:ok:0 tokens", "", items)
    arrivals = sorted(endpoint.arrivals[n0:])
    assert len(arrivals) == 12
    per_request, rate, burst = sum(USAGE.values()), tpm / 60, tpm / 60
    for i, a in enumerate(arrivals):
        for j in range(i + 1, len(arrivals)):
            tokens = (j - i + 1) * per_request
            # bucket + refill + one request admitted on an estimate below its billed size, + transit slack
            assert tokens <= burst + rate * (arrivals[j] - a) + 3 * per_request, (i, j)
    judge.close()


def test_redis_cache_survives_a_judge_restart_and_is_shared(
    endpoint: ReasoningEndpoint, redis_url: str
) -> None:
    import redis

    model = f"cache-{time.time_ns()}"
    backend = cfg(endpoint.url, model=model, profile="reasoning", cache_redis_url=redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        first = build_judge(JudgeConfig(backend=backend))
        n0 = len(endpoint.bodies)
        assert judge_one(first, "ok:2").first_error_step == 2
        first.close()
        keys = client.keys(f"sgpo:judge_cache:{model}:*")
        assert len(keys) == 1 and client.ttl(keys[0]) > 0
        second = build_judge(JudgeConfig(backend=backend))  # a restarted (or another) replica
        assert judge_one(second, "ok:2").first_error_step == 2
        assert len(endpoint.bodies) == n0 + 1
        assert second.stats()["llm_redis_hits"] == 1
        second.close()
    finally:
        for k in client.keys(f"sgpo:judge_cache:{model}:*"):
            client.delete(k)
        client.close()


def test_redis_down_is_a_cache_miss_not_a_failure(endpoint: ReasoningEndpoint) -> None:
    backend = cfg(
        endpoint.url,
        model="no-redis",
        profile="reasoning",
        cache_redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    judge = build_judge(JudgeConfig(backend=backend))
    assert judge_one(judge, "ok:0").first_error_step == 0
    judge.close()


def test_the_response_budget_bounds_retries(endpoint: ReasoningEndpoint) -> None:
    backend = cfg(
        endpoint.url,
        model="budget",
        profile="reasoning",
        timeout_s=0.2,
        response_budget_s=0.5,
        max_retries=10,
    )
    judge = build_judge(JudgeConfig(backend=backend))
    n0 = len(endpoint.bodies)
    j = judge_one(judge, "slow")
    assert j.status == "failed" and "response_budget_s = 0.5 spent" in j.reason, j.reason
    # Each attempt times out at 0.2 s: the budget, not max_retries = 10, ended it.
    attempts = int(re.search(r"gave up after (\d+) attempts", j.reason).group(1))  # type: ignore[union-attr]
    assert 1 <= attempts <= 3 and len(endpoint.bodies) - n0 == attempts
    judge.close()


# ---- the policy as its own judge: the generator's OpenAI-compatible API ------------------------------------
SHORT_TEMPLATE = "{problem}\n{tagged_response}\nFirst wrong paragraph in \\boxed{{}}:"


@pytest.fixture(scope="module")
def generator_http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from sgpo.tasks.tiny import build_tiny_policy

    policy = build_tiny_policy(tmp_path_factory.mktemp("policy") / "p", seed=0)
    http_port = free_port()
    env = {
        "SGPO_GENERATOR__MODEL": str(policy),
        "SGPO_GENERATOR__SERVED_MODEL_NAME": "policy",
        "SGPO_GENERATOR__HTTP_PORT": str(http_port),
        "SGPO_GENERATOR__THREADS": "1",
    }
    with run_service("generator", tmp_path_factory.mktemp("generator"), env=env):
        yield f"http://127.0.0.1:{http_port}/v1"


@pytest.mark.parametrize("profile", ["chat", "reasoning"])
def test_the_policy_as_its_own_judge_speaks_the_contract(generator_http: str, profile: str) -> None:
    """The tiny policy cannot critique (its answers have no \\boxed{}: unparseable, or truncated at
    max_tokens), but every request is accepted and its
    usage counted: the wire contract, both profiles. The ProcessBench template is longer than its 512-token
    context, so a short prompt_template is used; that the long one is a per-item failure is checked too."""
    metrics = JudgeMetrics()
    backend = LlmBackend(
        base_url=generator_http,
        model="policy",
        profile=profile,
        max_tokens=16,
        prompt_template=SHORT_TEMPLATE,
    )
    judge = build_judge(JudgeConfig(backend=backend), metrics)
    (j,) = judge.judge("Start with 7. Add 5.", "", [JudgeItem(steps=("7 + 5 = 12", "Answer: 12"))])
    assert j.status == "failed" and ("unparseable" in j.reason or "truncated" in j.reason), j.reason
    stats = judge.stats()
    assert stats["llm_config_errors"] == 0 and stats["llm_prompt_tokens"] > 20
    assert 0 < stats["llm_completion_tokens"] <= 16
    judge.close()
    long = build_judge(JudgeConfig(backend=backend.model_copy(update={"prompt_template": None})), metrics)
    (j,) = long.judge("Start with 7. Add 5.", "", [JudgeItem(steps=("7 + 5 = 12", "Answer: 12"))])
    assert j.status == "failed" and "HTTP 400" in j.reason and "configuration error" not in j.reason
    long.close()


def test_eval_judge_runs_end_to_end_on_processbench_against_a_local_server(
    endpoint: ReasoningEndpoint, tmp_path: Path
) -> None:
    import json
    import subprocess

    from tests.support import sgpo_cmd

    data = SHARED_DATA / "processbench" / "gsm8k.json"
    if not data.is_file():
        pytest.skip(f"ProcessBench not found at {data}")
    cfg_path = tmp_path / "judge.toml"
    cfg_path.write_text('[judge.backend]\ntype = "llm"\nprofile = "reasoning"\nmodel = "o4-mini"\n')
    out = tmp_path / "result.json"
    r = subprocess.run(
        [
            *sgpo_cmd("eval-judge"),
            "--data",
            str(data),
            "--limit",
            "20",
            "--config",
            str(cfg_path),
            "--backend",
            "llm",
            "--base-url",
            endpoint.url,
            "--no-progress",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(out.read_text())
    # The endpoint always answers paragraph 1: exactly the items whose label is 1 are right.
    labels = [x["label"] for x in json.loads(data.read_text())[:20]]
    assert result["n"] == 20 and result["failed"] == 0
    assert result["error_acc"] == pytest.approx(
        sum(y == 1 for y in labels) / max(1, sum(y != -1 for y in labels))
    )
    assert result["backend_stats"]["llm_prompt_tokens"] == 20 * USAGE["prompt_tokens"]
    assert "published F1" in r.stderr


def test_the_redis_cache_survives_a_judge_process_restart(
    endpoint: ReasoningEndpoint, redis_url: str, tmp_path: Path
) -> None:
    """`sgpo serve judge` twice (a restart, or a second replica): the second answers from Redis."""
    import grpc
    import redis

    from sgpo.common.convert import judgement_from_pb
    from sgpo.v1 import judge_pb2, judge_pb2_grpc

    model = f"restart-{time.time_ns()}"
    env = {
        "SGPO_JUDGE__HTTP_ENABLED": "false",
        "SGPO_JUDGE__BACKEND__TYPE": "llm",
        "SGPO_JUDGE__BACKEND__PROFILE": "reasoning",
        "SGPO_JUDGE__BACKEND__BASE_URL": endpoint.url,
        "SGPO_JUDGE__BACKEND__MODEL": model,
        "SGPO_JUDGE__BACKEND__CACHE_REDIS_URL": redis_url,
    }
    request = judge_pb2.JudgeRequest(
        problem="SCRIPT:ok:2 How many pencils are left?", items=[judge_pb2.JudgeItem(steps=list(STEPS))]
    )
    n0 = len(endpoint.bodies)
    try:
        for _ in range(2):
            with run_service("judge", tmp_path, env=env) as judge, grpc.insecure_channel(judge.target) as ch:
                (pb,) = judge_pb2_grpc.JudgeServiceStub(ch).Judge(request, timeout=60).judgements
                j = judgement_from_pb(pb)
                assert (j.status, j.first_error_step) == ("ok", 2), j.reason
        assert len(endpoint.bodies) == n0 + 1  # the restarted judge did not ask again
    finally:
        client = redis.Redis.from_url(redis_url)
        for k in client.keys(f"sgpo:judge_cache:{model}:*"):
            client.delete(k)
        client.close()
