"""Schemathesis fuzzing of the judge's HTTP API from its own OpenAPI schema, against a real uvicorn server.

Valid requests (with a key) must get 200 / 413 / 422 and answers that match the declared schemas; requests
the schema forbids (negative mode) a 4xx with the uniform error body; any request without a key a 401; never a
5xx. The full run sends over 500 requests (marked slow, about a minute on this machine); CI runs a short one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sgpo.judge.api import JudgeRequestIn, build_app
from sgpo.judge.config import JudgeConfig
from sgpo.judge.judge import build_judge
from sgpo.judge.server import HttpServer
from sgpo.judge.state import JudgeState

pytestmark = pytest.mark.integration

KEY = "fuzz-key"
FUZZ = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
CHECKS = [status_code_conformance, content_type_conformance, response_schema_conformance]


class Server:
    def __init__(self) -> None:
        cfg = JudgeConfig(max_items=16, max_request_bytes=16_384, api_keys=[KEY])  # type: ignore[list-item]
        self.state = JudgeState(cfg, api_keys=(KEY,))
        self.state.judge = build_judge(cfg, self.state.metrics)
        self.http = HttpServer(build_app(cfg, self.state), "127.0.0.1", 0, grace_s=1)
        self.http.start()
        self.url = f"http://127.0.0.1:{self.http.port}"
        self.schema = schemathesis.openapi.from_url(f"{self.url}/openapi.json")
        self.op = self.schema["/v1/judge"]["POST"]

    def call(self, case: Any, headers: dict[str, str] | None, seen: Counter[int]) -> Any:
        response = case.call(base_url=self.url, headers=headers, timeout=30)
        seen[response.status_code] += 1
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
        return response


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.http.stop()
    s.state.judge.close()  # type: ignore[union-attr]


def fuzz_valid(server: Server, n: int) -> Counter[int]:
    seen: Counter[int] = Counter()

    @settings(FUZZ, max_examples=n)
    @given(case=server.op.as_strategy(schemathesis.GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        response = server.call(case, {"X-API-Key": KEY}, seen)
        assert response.status_code in (200, 413, 422), response.text[:500]
        case.validate_response(response, checks=CHECKS)
        if response.status_code == 200:
            judgements = response.json()["judgements"]
            assert len(judgements) == len(case.body["items"])
            for j in judgements:
                assert -1 <= j["first_error_step"] < max(1, len(j["steps"]))
                assert 0.0 <= j["rts"] <= 1.0 and 0.0 <= j["reward"] < 1.0

    run()
    return seen


def fuzz_invalid(server: Server, n: int) -> Counter[int]:
    seen: Counter[int] = Counter()

    @settings(FUZZ, max_examples=n)
    @given(case=server.op.as_strategy(schemathesis.GenerationMode.NEGATIVE))
    def run(case: Any) -> None:
        response = server.call(case, {"X-API-Key": KEY}, seen)
        try:
            JudgeRequestIn.model_validate(case.body)
        except ValidationError:
            body_ok = False
        else:
            body_ok = True  # schemathesis negated something else (a header); the body itself is valid
        if body_ok:
            assert response.status_code in (200, 413, 422), response.text[:500]
        else:
            assert response.status_code in (413, 422), response.text[:500]
            error = response.json()["error"]
            assert error["code"] in ("invalid_argument", "payload_too_large") and error["message"]

    run()
    return seen


def fuzz_anonymous(server: Server, n: int) -> Counter[int]:
    seen: Counter[int] = Counter()

    @settings(FUZZ, max_examples=n)
    @given(case=server.op.as_strategy(schemathesis.GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() not in ("x-api-key", "authorization")
        }
        response = server.call(case, None, seen)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"

    run()
    return seen


def test_fuzz_short(server: Server) -> None:
    valid = fuzz_valid(server, 40)
    invalid = fuzz_invalid(server, 20)
    anonymous = fuzz_anonymous(server, 10)
    assert valid[200] > 0 and invalid[422] > 0 and anonymous[401] == sum(anonymous.values()) >= 10


@pytest.mark.slow
def test_fuzz_over_500_requests(server: Server) -> None:
    valid = fuzz_valid(server, 300)
    invalid = fuzz_invalid(server, 150)
    anonymous = fuzz_anonymous(server, 60)
    total = valid + invalid + anonymous
    print(f"\nschemathesis: {sum(total.values())} requests, statuses {dict(sorted(total.items()))}")
    assert sum(total.values()) >= 500
    assert not any(code >= 500 for code in total)
    assert valid[200] > 50  # the fuzzer gets through: most valid requests are judged


def test_health_and_metrics_operations(server: Server) -> None:
    seen: Counter[int] = Counter()
    for path in ("/healthz", "/metrics"):
        op = server.schema[path]["GET"]

        @settings(FUZZ, max_examples=5)
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            response = server.call(case, None, seen)
            assert response.status_code == 200
            case.validate_response(response, checks=[status_code_conformance])

        run()
    assert seen[200] >= 2
