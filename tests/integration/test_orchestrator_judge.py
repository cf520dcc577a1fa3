"""The orchestrator with an `llm` judge whose endpoint misbehaves: real generator, verifier and judge
processes, the real Redis, and a local OpenAI-compatible endpoint (the remote LLM's test double).

- a failure storm (the endpoint answers every request with a 400 naming `temperature`, as reasoning models
  do) trips the judge alarm within its window: metrics, status file, groups.jsonl, and the run stops;
- partial progress: responses whose first critique failed are re-sent alone, the others are never re-asked.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from sgpo.common.queue import GroupQueue
from sgpo.orchestrator.clients import Clients
from sgpo.orchestrator.config import OrchestratorConfig
from sgpo.orchestrator.loop import Orchestrator
from sgpo.orchestrator.metrics import OrchestratorMetrics
from sgpo.orchestrator.server import QueueSink
from sgpo.tasks.arith import generate_split, write_jsonl
from sgpo.tasks.tiny import build_tiny_policy
from tests.support import ServiceProcess, free_port, run_service

pytestmark = pytest.mark.integration
G = 4


class Endpoint:
    """mode "storm": every request is a 400 naming `temperature`; mode "flaky": the first request of a prompt
    whose digest is odd gets a reply without \\boxed{} (a per-item failure), everything else \\boxed{0}."""

    def __init__(self) -> None:
        self.mode = "storm"
        self.asked: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                with outer.lock:
                    outer.asked[prompt] += 1
                    n = outer.asked[prompt]
                if outer.mode == "storm":
                    status, reply = 400, {"error": {
                        "message": "Unsupported value: 'temperature' does not support 0.0 with this model.",
                        "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value",
                    }}  # fmt: skip
                else:
                    odd = int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2
                    content = "Hmm." if odd and n == 1 else "\\boxed{0}"
                    status, reply = 200, {"choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ], "usage": {"prompt_tokens": 10, "completion_tokens": 3}}  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    e = Endpoint()
    yield e
    e.close()


@pytest.fixture(scope="module")
def services(
    tmp_path_factory: pytest.TempPathFactory, endpoint: Endpoint
) -> Iterator[dict[str, ServiceProcess]]:
    root = tmp_path_factory.mktemp("orch-judge")
    policy = build_tiny_policy(root / "policy", seed=0)
    judge_env = {
        "SGPO_JUDGE__HTTP_ENABLED": "false",
        "SGPO_JUDGE__BACKEND__TYPE": "llm",
        "SGPO_JUDGE__BACKEND__BASE_URL": endpoint.url,
        "SGPO_JUDGE__BACKEND__MAX_RETRIES": "0",
    }
    with (
        run_service("verifier", root, env={"SGPO_VERIFIER__WORKERS": "1"}) as verifier,
        run_service("judge", root, env=judge_env) as judge,
        run_service(
            "generator",
            root,
            env={
                "SGPO_GENERATOR__MODEL": str(policy),
                "SGPO_GENERATOR__HTTP_ENABLED": "false",
                "SGPO_GENERATOR__THREADS": "1",
            },
        ) as generator,
    ):
        yield {"verifier": verifier, "judge": judge, "generator": generator}


def orchestrator(
    services: dict[str, ServiceProcess], tmp_path: Path, run_id: str, redis_url: str, seed: int, **kw: Any
) -> Orchestrator:
    dataset = tmp_path / "prompts.jsonl"
    write_jsonl(dataset, generate_split("test", [2], 6, seed=seed))
    cfg = OrchestratorConfig(
        dataset=dataset,
        run_id=run_id,
        redis_url=redis_url,
        generator_target=services["generator"].target,
        verifier_target=services["verifier"].target,
        judge_target=services["judge"].target,
        prompts_per_request=2,
        max_concurrency=1,
        sampling={"max_tokens": 24},
        stats_path=tmp_path / "groups.jsonl",
        status_path=tmp_path / "status.json",
        retry={"backoff_s": 0.05},
        **{"algo": {"group_size": G}, **kw},
    )
    clients = Clients(services["generator"].target, services["verifier"].target, services["judge"].target)
    return Orchestrator(
        cfg, QueueSink(GroupQueue(redis_url, run_id)), clients=clients, metrics=OrchestratorMetrics()
    )


def test_a_judge_failure_storm_trips_the_alarm_and_stops_the_run(
    services: dict[str, ServiceProcess], endpoint: Endpoint, redis_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    endpoint.mode = "storm"
    alarm = {"window": 8, "min_judged": 8, "max_failed_share": 0.5, "on_alarm": "stop"}
    orch = orchestrator(services, tmp_path, redis_prefix, redis_url, seed=11, judge_alarm=alarm, epochs=0)
    stats = orch.run()  # epochs=0 runs until stopped: only the alarm ends it
    assert stats.stopped_reason.startswith("judge alarm: 100% of the last 8 judgements failed"), stats
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["judge_alarm"] is True and status["judge_failed_share"] == 1.0
    assert status["stopped_reason"] == stats.stopped_reason
    reg = orch.metrics.registry
    assert reg.get_sample_value("sgpo_orchestrator_judge_alarm") == 1
    assert reg.get_sample_value("sgpo_orchestrator_judgements_total", {"outcome": "failed"}) >= 8
    rows = [json.loads(line) for line in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert rows and all(r["uncolorable"] and r["judge_failed"] == G for r in rows)
    assert rows[-1]["judge_alarm"] is True
    assert all(0 <= r["truncated"] <= r["completions"] == G for r in rows)
    # The judge said why, loudly: its config-error counter names the parameter.
    import httpx

    text = httpx.get(f"http://127.0.0.1:{services['judge'].metrics_port}/metrics").text
    assert 'sgpo_judge_llm_config_errors_total{param="temperature"}' in text
    assert "the LLM endpoint rejects the judge's requests" in services["judge"].log()


def test_only_the_responses_not_yet_judged_are_sent_again(
    services: dict[str, ServiceProcess], endpoint: Endpoint, redis_prefix: str, redis_url: str, tmp_path: Path
) -> None:
    endpoint.mode = "flaky"
    with endpoint.lock:
        endpoint.asked.clear()
    orch = orchestrator(services, tmp_path, redis_prefix, redis_url, seed=12, judge_attempts=2, epochs=1)
    stats = orch.run()
    assert not stats.stopped_reason and stats.enqueued == 6
    rows = [json.loads(line) for line in (tmp_path / "groups.jsonl").read_text().splitlines()]
    assert all(not r["uncolorable"] and r["judge_failed"] == 0 and r["colored"] for r in rows)
    asked = dict(endpoint.asked)
    odd = {p for p in asked if int(hashlib.sha256(p.encode()).hexdigest(), 16) % 2}
    assert odd and len(odd) < len(asked)  # both kinds occurred
    # A critique that failed was asked once more; one that succeeded never again (no group re-judged whole).
    assert all(asked[p] == 2 for p in odd) and all(asked[p] == 1 for p in set(asked) - odd)
