"""`sgpo serve judge` as users start it: gRPC JudgeService.Judge and HTTP POST /v1/judge in one process, with the
same semantics, auth and limits, health, metrics, OpenAPI, and a clean SIGTERM."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from sgpo.common.convert import judgement_from_pb
from sgpo.core import ColoringParams, compute_colored_reward, judgement_rts
from sgpo.v1 import judge_pb2, judge_pb2_grpc
from tests.support import ServiceProcess, free_port, run_service, sgpo_cmd

pytestmark = pytest.mark.integration

KEY = "test-key-123"
PROBLEM = "Start with 7. Add 5. Multiply by 3. Subtract 4."
REFERENCE = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 32\nAnswer: 32"
SLIP = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nStep 3: 35 - 4 = 31\nAnswer: 31"
OPERAND = "Step 1: 7 + 5 = 12\nStep 2: 12 * 4 = 48\nStep 3: 48 - 4 = 44\nAnswer: 44"


class Judge:
    def __init__(self, service: ServiceProcess, http_port: int) -> None:
        self.service = service
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=30)
        self.channel = grpc.insecure_channel(service.target)
        self.stub = judge_pb2_grpc.JudgeServiceStub(self.channel)


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Judge]:
    http_port = free_port()
    env = {
        "SGPO_JUDGE__HTTP_PORT": str(http_port),
        "SGPO_JUDGE__API_KEYS": json.dumps([KEY, "second-key"]),
        "SGPO_JUDGE__MAX_ITEMS": "16",
        "SGPO_JUDGE__MAX_REQUEST_BYTES": "65536",
    }
    with run_service("judge", tmp_path_factory.mktemp("judge"), env=env) as service:
        j = Judge(service, http_port)
        yield j
        j.http.close()
        j.channel.close()
        assert service.stop() == 0
        assert "stopped" in service.log()


def grpc_request(**kw: object) -> judge_pb2.JudgeRequest:
    items = [
        judge_pb2.JudgeItem(response=SLIP, token_char_starts=list(range(len(SLIP)))),
        judge_pb2.JudgeItem(response=OPERAND),
        judge_pb2.JudgeItem(steps=["2 + 2 = 4", "4 * 4 = 15", "so 15"]),
    ]
    return judge_pb2.JudgeRequest(problem=PROBLEM, reference_solution=REFERENCE, items=items, **kw)  # type: ignore[arg-type]


HTTP_BODY = {
    "problem": PROBLEM,
    "reference_solution": REFERENCE,
    "items": [
        {"response": SLIP, "token_char_starts": list(range(len(SLIP)))},
        {"response": OPERAND},
        {"steps": ["2 + 2 = 4", "4 * 4 = 15", "so 15"]},
    ],
}


def test_grpc_judges_a_group(judge: Judge) -> None:
    resp = judge.stub.Judge(grpc_request(), timeout=30)
    got = [judgement_from_pb(j) for j in resp.judgements]
    assert [j.first_error_step for j in got if j] == [1, 1, 0]
    assert all(j and j.status == "ok" and j.backend == "symbolic" for j in got)
    assert got[1] and "where the reference does '12 * 3 = 36'" in got[1].reason
    assert got[2] and "where the reference does '7 + 5 = 12'" in got[2].reason  # another problem's steps
    assert got[0] and "characters" not in got[0].reason and got[1] and "characters" in got[1].reason
    # The judge measures, core scores: token counts with offsets (one per character here), else characters.
    assert got[0] and sum(got[0].step_lengths) == len(SLIP)
    assert got[2] and got[2].step_lengths == (9, 10, 5)


def test_http_and_grpc_give_the_same_judgements(judge: Judge) -> None:
    coloring = {"beta": 8.0, "gamma": 0.4, "r_max": 0.3, "rts_unit": "steps"}
    r = judge.http.post("/v1/judge", json={**HTTP_BODY, "coloring": coloring}, headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    via_http = r.json()["judgements"]
    resp = judge.stub.Judge(grpc_request(), timeout=30)
    params = ColoringParams(**coloring)  # type: ignore[arg-type]
    for h, g in zip(via_http, resp.judgements, strict=True):
        assert (h["first_error_step"], h["steps"], h["reason"]) == (
            g.first_error_step,
            list(g.steps),
            g.reason,
        )
        # HTTP's rts and reward are sgpo.core's, applied to what gRPC callers get.
        j = judgement_from_pb(g)
        assert j is not None
        rts = judgement_rts(j, params.rts_unit)
        assert h["rts"] == pytest.approx(rts) and h["reward"] == pytest.approx(
            compute_colored_reward(rts, params)
        )
    assert via_http[0]["rts"] == pytest.approx(1 / 4)  # steps: 1 of 4 before the error
    # Bearer works too, and a partial coloring takes the server's defaults for the rest.
    r = judge.http.post(
        "/v1/judge",
        json={**HTTP_BODY, "coloring": {"rts_unit": "steps"}},
        headers={"Authorization": "Bearer second-key"},
    )
    assert r.status_code == 200 and r.json()["judgements"][0]["rts"] == pytest.approx(1 / 4)


def error(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    assert body["error"]["code"] == code
    return dict(body["error"])


def test_http_auth(judge: Judge) -> None:
    assert "missing API key" in str(
        error(judge.http.post("/v1/judge", json=HTTP_BODY), 401, "unauthenticated")["message"]
    )
    error(judge.http.post("/v1/judge", json=HTTP_BODY, headers={"X-API-Key": "nope"}), 401, "unauthenticated")
    # Auth is checked before the body is parsed or size-checked.
    error(
        judge.http.post("/v1/judge", content=b"{not json", headers={"content-type": "application/json"}),
        401,
        "unauthenticated",
    )
    error(judge.http.post("/v1/judge", content=b"x" * 100_000), 401, "unauthenticated")


def test_http_limits(judge: Judge) -> None:
    h = {"X-API-Key": KEY}
    big = {"problem": "p", "items": [{"response": "1 + 1 = 2\n" * 8000}]}
    assert "max_request_bytes = 65536" in str(
        error(judge.http.post("/v1/judge", json=big, headers=h), 413, "payload_too_large")["message"]
    )
    many = {"problem": "p", "items": [{"response": "1 + 1 = 2"}] * 17}
    assert "at most 16" in str(
        error(judge.http.post("/v1/judge", json=many, headers=h), 413, "payload_too_large")["message"]
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"problem": "p", "items": [{"response": "'
        for _ in range(100):
            yield b"1 + 1 = 2 " * 100
        yield b'"}]}'

    error(
        judge.http.post("/v1/judge", content=chunks(), headers={**h, "content-type": "application/json"}),
        413,
        "payload_too_large",
    )


def test_http_schema_and_domain_errors_are_422_with_the_field(judge: Judge) -> None:
    h = {"X-API-Key": KEY}
    e = error(
        judge.http.post("/v1/judge", json={"problem": "p", "items": [{"steps": "x"}]}, headers=h),
        422,
        "invalid_argument",
    )
    assert e["field"] == "items.0.steps"
    e = error(judge.http.post("/v1/judge", json={"items": []}, headers=h), 422, "invalid_argument")
    assert e["field"] == "problem"
    r = judge.http.post("/v1/judge", json={"problem": "p", "items": [{"response": " "}]}, headers=h)
    assert r.status_code == 200 and r.json()["judgements"][0]["rts"] == 0.0  # empty: wrong from the start
    e = error(
        judge.http.post(
            "/v1/judge", json={"problem": "p", "items": [], "coloring": {"r_max": 1.0}}, headers=h
        ),
        422,
        "invalid_argument",
    )
    assert e["field"] == "coloring.r_max"
    error(
        judge.http.post("/v1/judge", content=b"{oops", headers={**h, "content-type": "application/json"}),
        422,
        "invalid_argument",
    )


def test_grpc_errors_map_to_status_codes(judge: Judge) -> None:
    with pytest.raises(grpc.RpcError) as e:
        judge.stub.Judge(
            judge_pb2.JudgeRequest(
                problem="p", items=[judge_pb2.JudgeItem(response="ab", token_char_starts=[0, 5])]
            ),
            timeout=30,
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "items[0].token_char_starts[1]" in str(
        e.value.details()
    )
    with pytest.raises(grpc.RpcError) as e:
        judge.stub.Judge(
            judge_pb2.JudgeRequest(problem="p", items=[judge_pb2.JudgeItem(response="x")] * 17), timeout=30
        )
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with pytest.raises(grpc.RpcError) as e:
        judge.stub.Judge(judge_pb2.JudgeRequest(problem="p" * 70_000, items=[]), timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_request_bytes" in str(
        e.value.details()
    )
    with pytest.raises(grpc.RpcError) as e:
        judge.stub.Judge(
            judge_pb2.JudgeRequest(problem="p", items=[judge_pb2.JudgeItem(response="a", steps=["a"])])
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "items[0]" in str(e.value.details())


def test_health_openapi_and_metrics(judge: Judge) -> None:
    assert judge.http.get("/healthz").json() == {"status": "serving", "backend": "symbolic"}
    schema = judge.http.get("/openapi.json").json()
    op = schema["paths"]["/v1/judge"]["post"]
    assert {"401", "413", "422"} <= set(op["responses"])
    assert {"APIKeyHeader", "HTTPBearer"} <= set(schema["components"]["securitySchemes"])
    judge.http.post("/v1/judge", json=HTTP_BODY, headers={"X-API-Key": KEY})
    text = judge.http.get("/metrics").text
    for needle in (
        'sgpo_judge_requests_total{code="200",transport="http"}',
        'sgpo_judge_requests_total{code="401",transport="http"}',
        'sgpo_judge_requests_total{code="OK",transport="grpc"}',
        'sgpo_judge_judgements_total{backend="symbolic",outcome="error_found"}',
        "sgpo_judge_first_error_step_bucket",
        'sgpo_judge_latency_seconds_bucket{le="0.005",transport="http"}',
        "sgpo_judge_cascade_llm_calls_saved_total",
        "sgpo_judge_ready 1.0",
    ):
        assert needle in text, needle
    # The gRPC shell's metrics port serves the same registry.
    assert (
        "sgpo_judge_judgements_total"
        in httpx.get(f"http://127.0.0.1:{judge.service.metrics_port}/metrics").text
    )


def test_print_config_hides_keys(tmp_path: Path) -> None:
    env = {"SGPO_JUDGE__API_KEYS": '["very-secret"]', "SGPO_JUDGE__BACKEND__TYPE": "llm"}
    import os

    out = subprocess.run(
        sgpo_cmd("serve", "judge", "--print-config"),
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cfg = json.loads(out)
    assert cfg["backend"]["type"] == "llm" and "very-secret" not in out
    bad = subprocess.run(
        sgpo_cmd("serve", "judge"),
        env={**os.environ, "SGPO_JUDGE__MAX_ITEMS": "0"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "max_items" in bad.stderr and "SGPO_JUDGE__MAX_ITEMS" in bad.stderr


def test_generated_key_goes_to_a_private_file_when_none_is_configured(tmp_path: Path) -> None:
    http_port = free_port()
    with run_service(
        "judge", tmp_path, env={"SGPO_JUDGE__HTTP_PORT": str(http_port), "SGPO_JUDGE__API_KEYS": "[]"}
    ) as s:
        line = next(json.loads(x) for x in s.log().splitlines() if "generated one" in x)
        key = Path(line["api_key_file"]).read_text().strip()  # the log names the file, never the key
        assert key not in s.log()
        body = {"problem": "p", "items": [{"steps": ["1 + 1 = 3"]}]}
        r = httpx.post(f"http://127.0.0.1:{http_port}/v1/judge", json=body, headers={"X-API-Key": key})
        assert r.status_code == 200 and r.json()["judgements"][0]["first_error_step"] == 0
        assert httpx.post(f"http://127.0.0.1:{http_port}/v1/judge", json=body).status_code == 401
