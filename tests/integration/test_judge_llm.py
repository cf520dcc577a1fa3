"""The `llm` and `cascade` backends against a real OpenAI-compatible HTTP server started here.

The server is the test double for the judge model (a remote LLM cannot run here): it answers
/v1/chat/completions with scripted replies chosen by a `SCRIPT:<name>` marker in the problem text —
well-formed, malformed, out of range, slow, flaky (503 then ok), a client error — and records every request.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from sgpo.core import judgement_rts
from sgpo.judge.config import CascadeBackend, JudgeConfig, LlmBackend
from sgpo.judge.judge import build_judge
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.types import JudgeItem
from tests.support import free_port

pytestmark = pytest.mark.integration


class ScriptedLLM:
    """A threaded HTTP server speaking the OpenAI chat-completions wire format with scripted answers."""

    def __init__(self) -> None:
        self.requests: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.headers: list[dict[str, str]] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                prompt = body["messages"][-1]["content"]
                script = prompt.split("SCRIPT:", 1)[1].split()[0] if "SCRIPT:" in prompt else "ok:0"
                with outer.lock:
                    outer.requests[script].append(body)
                    outer.headers.append(dict(self.headers))
                    n = len(outer.requests[script])
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    outer.reply(self, script, n, self.path)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, h: BaseHTTPRequestHandler, script: str, n: int, path: str) -> None:
        def send(status: int, payload: bytes, ctype: str = "application/json") -> None:
            h.send_response(status)
            h.send_header("content-type", ctype)
            h.send_header("content-length", str(len(payload)))
            h.end_headers()
            h.wfile.write(payload)

        def chat(content: str) -> None:
            send(200, json.dumps({"id": "x", "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ]}).encode())  # fmt: skip

        if path != "/v1/chat/completions":
            send(404, b'{"error": "not found"}')
        elif script.startswith("ok:"):
            chat(f"Paragraph {script[3:]} has the first mistake.\n\n\\boxed{{{script[3:]}}}")
        elif script == "think":
            chat("<think>maybe \\boxed{0}? no.</think> The earliest error is in paragraph 2: \\boxed{2}")
        elif script == "malformed":
            chat("I believe the second paragraph is wrong.")
        elif script == "not_an_index":
            chat("\\boxed{paragraph two}")
        elif script == "badjson":
            send(200, b"<html>gateway</html>", "text/html")
        elif script == "out_of_range":
            chat("\\boxed{99}")
        elif script == "slow":
            time.sleep(1.0)
            chat("\\boxed{1}")
        elif script == "flaky":
            if n == 1:
                send(503, b'{"error": "overloaded"}')
            else:
                chat("\\boxed{1}")
        elif script == "client_error":
            send(400, b'{"error": {"message": "maximum context length exceeded"}}')
        elif script == "busy":
            time.sleep(0.15)
            chat("\\boxed{-1}")
        else:
            send(500, b"unknown script")

    def count(self, script: str) -> int:
        with self.lock:
            return len(self.requests[script])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM()
    yield server
    server.close()


STEPS = ("Tom has 3 * 12 = 36 pencils.", "He gives away 5 and keeps 36 - 5 = 31.", "The answer is 31.")


def llm_cfg(url: str, **kw: Any) -> LlmBackend:
    base: dict[str, Any] = dict(
        base_url=url, model="critic", api_key="secret-token", backoff_s=0.01, backoff_max_s=0.05
    )
    return LlmBackend(**{**base, **kw})


def judge_one(judge: Any, script: str, steps: tuple[str, ...] = STEPS, reference: str = "") -> Any:
    (j,) = judge.judge(f"SCRIPT:{script} How many pencils are left?", reference, [JudgeItem(steps=steps)])
    return j


def test_well_formed_reply_and_the_request_it_answers(llm: ScriptedLLM) -> None:
    metrics = JudgeMetrics()
    judge = build_judge(JudgeConfig(backend=llm_cfg(llm.url)), metrics)
    j = judge_one(judge, "ok:1", reference="3 * 12 = 36, 36 - 5 = 31")
    assert (j.status, j.first_error_step, j.backend) == ("ok", 1, "llm")
    assert judgement_rts(j, "tokens") == pytest.approx(len(STEPS[0]) / sum(map(len, STEPS)))
    body = llm.requests["ok:1"][0]
    prompt = body["messages"][0]["content"]
    assert body["model"] == "critic" and body["temperature"] == 0.0
    for i, s in enumerate(STEPS):
        assert f"<paragraph_{i}>\n{s}\n</paragraph_{i}>" in prompt
    assert "[Reference Solution]\n\n3 * 12 = 36, 36 - 5 = 31" in prompt
    assert "\\boxed{}" in prompt and "earliest error" in prompt
    assert llm.headers[0]["Authorization"] == "Bearer secret-token"
    assert metrics.registry.get_sample_value("sgpo_judge_llm_calls_total", {"outcome": "ok"}) == 1
    # The last \boxed{} counts (reasoning models think aloud first).
    assert judge_one(judge, "think", steps=(*STEPS, "Done.")).first_error_step == 2
    judge.close()


def test_identical_requests_are_answered_from_the_cache(llm: ScriptedLLM) -> None:
    metrics = JudgeMetrics()
    judge = build_judge(JudgeConfig(backend=llm_cfg(llm.url)), metrics)
    assert judge_one(judge, "ok:2").first_error_step == 2
    assert judge_one(judge, "ok:2").first_error_step == 2
    assert llm.count("ok:2") == 1
    assert judge.stats()["llm_cache_hits"] == 1
    assert metrics.registry.get_sample_value("sgpo_judge_llm_calls_total", {"outcome": "cache_hit"}) == 1
    # A different response is a different key.
    assert judge_one(judge, "ok:2", steps=(*STEPS[:2], "So 31 pencils.")).first_error_step == 2
    assert llm.count("ok:2") == 2
    judge.close()


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("malformed", "unparseable: the reply has no \\boxed{index}"),
        ("not_an_index", "is not an integer index"),
        ("out_of_range", "out_of_range: \\boxed{99} is not -1 or a paragraph index in [0, 2]"),
        ("badjson", "malformed reply (not an OpenAI chat completion)"),
        ("client_error", "HTTP 400 from the endpoint"),
    ],
)
def test_bad_replies_fail_without_inventing_an_index(llm: ScriptedLLM, script: str, reason: str) -> None:
    metrics = JudgeMetrics()
    judge = build_judge(JudgeConfig(backend=llm_cfg(llm.url)), metrics)
    j = judge_one(judge, script)
    assert j.status == "failed" and reason in j.reason
    assert (j.step_lengths, j.steps) == ((), STEPS)
    assert llm.count(script) == 1  # not retried: asking again would get the same answer
    assert (
        metrics.registry.get_sample_value(
            "sgpo_judge_judgements_total", {"backend": "llm", "outcome": "failed"}
        )
        == 1
    )
    # Failures are not cached: the next identical request asks again.
    judge_one(judge, script)
    assert llm.count(script) == 2
    judge.close()


def test_slow_replies_time_out_after_retries(llm: ScriptedLLM) -> None:
    metrics = JudgeMetrics()
    judge = build_judge(JudgeConfig(backend=llm_cfg(llm.url, timeout_s=0.2, max_retries=2)), metrics)
    j = judge_one(judge, "slow")
    assert j.status == "failed" and "timed out" in j.reason and "gave up after 3 attempts" in j.reason
    assert llm.count("slow") == 3
    assert metrics.registry.get_sample_value("sgpo_judge_llm_retries_total") == 2
    assert metrics.registry.get_sample_value("sgpo_judge_llm_calls_total", {"outcome": "timeout"}) == 1
    judge.close()


def test_server_errors_are_retried_with_backoff(llm: ScriptedLLM) -> None:
    judge = build_judge(JudgeConfig(backend=llm_cfg(llm.url, max_retries=2)))
    j = judge_one(judge, "flaky")
    assert (j.status, j.first_error_step) == ("ok", 1)
    assert llm.count("flaky") == 2 and judge.stats()["llm_retries"] == 1
    judge.close()


def test_unreachable_endpoint_fails_cleanly() -> None:
    judge = build_judge(JudgeConfig(backend=llm_cfg(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)))
    j = judge_one(judge, "ok:0")
    assert j.status == "failed" and "cannot reach" in j.reason
    judge.close()


def test_concurrency_is_capped_across_requests(llm: ScriptedLLM) -> None:
    judge = build_judge(JudgeConfig(backend=llm_cfg(llm.url, max_concurrency=3)))
    items = [JudgeItem(steps=(f"Step {i}: 1 + {i} = {i + 1}", "Done.")) for i in range(8)]
    threads = [
        threading.Thread(target=judge.judge, args=(f"SCRIPT:busy group {g}", "", items)) for g in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert llm.count("busy") == 16
    assert 2 <= llm.max_in_flight <= 3
    judge.close()


def test_cascade_asks_the_llm_only_where_arithmetic_is_clean(llm: ScriptedLLM) -> None:
    metrics = JudgeMetrics()
    cfg = JudgeConfig(backend=CascadeBackend(llm=llm_cfg(llm.url)))
    judge = build_judge(cfg, metrics)
    slip = ("Tom has 3 * 12 = 38 pencils.", "He keeps 38 - 5 = 33.", "The answer is 33.")
    prose = ("Tom has three boxes of a dozen.", "He keeps all but five.", "The answer is 31.")
    a, b, c = judge.judge(
        "SCRIPT:ok:1 pencils", "", [JudgeItem(steps=slip), JudgeItem(steps=prose), JudgeItem(steps=STEPS)]
    )
    assert (a.first_error_step, a.backend) == (0, "cascade:symbolic")
    assert (b.first_error_step, b.backend) == (1, "cascade:llm")
    assert (c.first_error_step, c.backend) == (1, "cascade:llm")
    assert "no checkable arithmetic" in b.reason
    assert llm.count("ok:1") == 2  # the slip never reached the LLM
    stats = judge.stats()
    assert (stats["cascade_judged"], stats["cascade_llm_calls_saved"]) == (3, 1)
    assert metrics.registry.get_sample_value("sgpo_judge_cascade_llm_calls_saved_total") == 1
    assert (
        metrics.registry.get_sample_value(
            "sgpo_judge_judgements_total", {"backend": "cascade", "outcome": "error_found"}
        )
        == 3
    )
    judge.close()
