"""Bounded resources and clean error paths of the services, on real servers over loopback (docs/design.md,
"5. Limits"): oversized messages and bodies refused before they are read (the server's RSS, from /proc),
idle / slow connections closed after their timeouts, cancellation freeing the generator and the verifier for
the next caller, a 500 that leaves its keep-alive connection usable, a client disconnect that is not a 500,
and `max_n` on the generator's HTTP API."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from sgpo.tasks.arith import format_prompt
from sgpo.tasks.tiny import build_tiny_policy
from sgpo.v1 import (
    common_pb2,
    generator_pb2,
    generator_pb2_grpc,
    judge_pb2,
    judge_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)
from tests.support import ServiceProcess, free_port, run_service

pytestmark = pytest.mark.integration

KEY = "limits-key"
BIG = 200 << 20  # the finding's 200 MB message


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def metric(service: ServiceProcess, name: str, **labels: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_metric(
    service: ServiceProcess, name: str, value: float, timeout: float = 15, **labels: str
) -> float:
    deadline = time.monotonic() + timeout
    while (got := metric(service, name, **labels)) < value and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def varint(v: int) -> bytes:
    out = b""
    while True:
        b, v = v & 0x7F, v >> 7
        if not v:
            return out + bytes([b])
        out += bytes([b | 0x80])


def big_string_field(size: int) -> bytes:
    """A valid protobuf message whose field 1 (a string: `problem`, `prompts`, `items`...) is `size` bytes."""
    return b"\x0a" + varint(size) + b"a" * size


def connect(port: int, timeout: float = 15) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length bodies) from a raw socket."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response; got {buf!r}")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    n = int(headers.get("content-length", "0"))
    while len(body) < n:
        body += s.recv(65536)
    return int(lines[0].split()[1]), headers, body


def closed_by_server(s: socket.socket) -> bool:
    """True when the server closes the connection (recv returns EOF) before the socket's timeout."""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


# ------------------------------------------------------------------------------------------------ judge


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, int]]:
    http_port = free_port()
    env = {
        "SGPO_JUDGE__HTTP_PORT": str(http_port),
        "SGPO_JUDGE__API_KEYS": json.dumps([KEY]),
        "SGPO_JUDGE__HTTP_LIMITS__HEADER_TIMEOUT_S": "1",
        "SGPO_JUDGE__HTTP_LIMITS__BODY_TIMEOUT_S": "1",
        "SGPO_JUDGE__HTTP_LIMITS__KEEP_ALIVE_S": "1",
    }
    with run_service("judge", tmp_path_factory.mktemp("judge"), env=env) as service:
        yield service, http_port
        assert service.stop() == 0


def test_judge_grpc_refuses_a_200mb_message_unread(judge: tuple[ServiceProcess, int]) -> None:
    service, _ = judge
    payload = big_string_field(BIG)
    before = rss_mb(service.proc.pid)
    with grpc.insecure_channel(service.target) as channel:
        call = channel.unary_unary("/sgpo.v1.JudgeService/Judge")
        with pytest.raises(grpc.RpcError) as err:
            call(payload, timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        after = rss_mb(service.proc.pid)
        # the finding: 138 -> 465 MiB. Refused from the length prefix, the server holds at most a window of it.
        assert after - before < 50, (before, after)
        # and the server still serves
        stub = judge_pb2_grpc.JudgeServiceStub(channel)
        request = judge_pb2.JudgeRequest(problem="p", items=[judge_pb2.JudgeItem(response="1 + 1 = 3")])
        assert stub.Judge(request, timeout=30).judgements[0].first_error_step == 0


def test_judge_http_refuses_an_oversized_body_before_reading_it(judge: tuple[ServiceProcess, int]) -> None:
    service, port = judge
    before = rss_mb(service.proc.pid)
    with connect(port) as s:
        # 200 MB declared, a few bytes sent: the answer comes without the server waiting for the rest
        s.sendall(
            b"POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {KEY}\r\nContent-Length: {BIG}\r\n\r\n".encode()
            + b'{"problem": "'
        )
        status, _, body = read_response(s)
        assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    with connect(port) as s:  # chunked, no length: cut once the limit is passed
        s.sendall(
            b"POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"a" * 65536
        status = 0
        try:
            for _ in range(64):  # 4 MiB offered against the 1 MiB limit
                s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, _ = read_response(s)
        assert status == 413
    assert rss_mb(service.proc.pid) - before < 50


def test_judge_http_closes_idle_and_slow_connections(judge: tuple[ServiceProcess, int]) -> None:
    _, port = judge
    idle, partial, slow, kept = (connect(port, timeout=10) for _ in range(4))
    partial.sendall(b"POST /v1/judge HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    slow.sendall(
        b"POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"X-API-Key: {KEY}\r\nContent-Length: 100\r\n\r\n".encode()
        + b'{"prob'
    )
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(kept)[0] == 200
    for s in (idle, partial, kept):  # 1 s header / keep-alive timeouts
        assert closed_by_server(s)
    status, headers, body = read_response(slow)  # 1 s body timeout: 408, then closed
    assert status == 408 and headers.get("connection") == "close", body
    assert closed_by_server(slow)
    for s in (idle, partial, slow, kept):
        s.close()


def test_judge_client_disconnect_is_not_a_500(judge: tuple[ServiceProcess, int]) -> None:
    service, port = judge
    before_499 = metric(service, "sgpo_judge_requests_total", transport="http", code="499")
    with connect(port) as s:
        s.sendall(
            b"POST /v1/judge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {KEY}\r\nContent-Length: 1000\r\n\r\n".encode()
            + b'{"problem": "'
        )
        time.sleep(0.2)
    assert wait_metric(
        service, "sgpo_judge_requests_total", before_499 + 1, transport="http", code="499"
    ) == (before_499 + 1)
    assert metric(service, "sgpo_judge_requests_total", transport="http", code="500") == 0
    log = service.log()
    assert "client went away" in log and "Traceback" not in log


def test_a_500_keeps_the_connection_and_logs_one_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The judge's app (its real middleware and handlers) in the real uvicorn server, with one route that
    fails unexpectedly."""
    from sgpo.common.http import HttpServer
    from sgpo.judge.api import build_app, http_limits
    from sgpo.judge.config import JudgeConfig
    from sgpo.judge.judge import build_judge
    from sgpo.judge.metrics import JudgeMetrics
    from sgpo.judge.state import JudgeState

    cfg = JudgeConfig()
    state = JudgeState(cfg, JudgeMetrics(), (KEY,))
    state.judge = build_judge(cfg, state.metrics)
    app = build_app(cfg, state)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    server = HttpServer(app, "127.0.0.1", 0, 1, service="judge", limits=http_limits(cfg))
    server.start()
    try:
        with caplog.at_level(logging.INFO), httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
            r = c.get("/v1/boom")
            assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
            assert "a bug" not in r.text  # sanitized
            r2 = c.get("/healthz")  # the same keep-alive connection
            assert r2.status_code == 200
            # httpx reuses a connection unless the server closed it: one connection for both requests
            pool = c._transport._pool  # type: ignore[attr-defined]
            assert len(pool.connections) == 1
        tracebacks = [rec for rec in caplog.records if rec.exc_info is not None]
        assert len(tracebacks) == 1 and "unhandled error" in tracebacks[0].getMessage()
        assert metric_value(state, "500") == 1
    finally:
        server.stop(10)


def metric_value(state: object, code: str) -> float:
    from prometheus_client import generate_latest

    text = generate_latest(state.metrics.registry).decode()  # type: ignore[attr-defined]
    m = re.search(rf'sgpo_judge_requests_total{{code="{code}",transport="http"}} (\S+)', text)
    return float(m.group(1)) if m else 0.0


# ------------------------------------------------------------------------------------------------ generator

PROMPT = format_prompt("Start with 7. Add 5.")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", seed=0))


@pytest.fixture(scope="module")
def generator(
    tmp_path_factory: pytest.TempPathFactory, tiny_policy: str
) -> Iterator[tuple[ServiceProcess, int]]:
    root = tmp_path_factory.mktemp("gen")
    policy = tiny_policy
    http_port = free_port()
    env = {
        "SGPO_GENERATOR__MODEL": str(policy),
        "SGPO_GENERATOR__SERVED_MODEL_NAME": "tiny",
        "SGPO_GENERATOR__HTTP_PORT": str(http_port),
        "SGPO_GENERATOR__THREADS": "1",
        "SGPO_GENERATOR__MAX_N": "64",
        "SGPO_GENERATOR__HTTP_LIMITS__MAX_BODY_BYTES": "1048576",
    }
    with run_service("generator", root, env=env) as service:
        yield service, http_port
        assert service.stop() == 0


def test_generator_http_caps(generator: tuple[ServiceProcess, int]) -> None:
    service, port = generator
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPT, "n": 65, "max_tokens": 4})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "max_n" in r.text
        before = rss_mb(service.proc.pid)
        r = c.post("/v1/completions", json={"prompt": "a" * (2 << 20), "max_tokens": 4})
        assert r.status_code == 413  # over the 1 MiB body limit, refused unread
        r = c.post("/v1/completions", json={"prompt": "a" * 900_000, "max_tokens": 4})
        # under the body limit but longer than any prompt the context holds: refused before tokenizing
        assert r.status_code == 400 and "max_prompt_chars" in r.text, r.text
        assert r.json()["error"]["param"] == "prompts[0]"
        assert rss_mb(service.proc.pid) - before < 50
        assert c.post("/v1/completions", json={"prompt": PROMPT, "n": 64, "max_tokens": 2}).status_code == 200


def _long_generate(stub: generator_pb2_grpc.GeneratorServiceStub) -> generator_pb2.GenerateRequest:
    # 4 x 64 rows decoding up to the context: tens of seconds of work on this machine
    sampling = common_pb2.SamplingParams(n=64, temperature=1.0, top_p=1.0, max_tokens=480, stop=[])
    return generator_pb2.GenerateRequest(prompts=["Start"] * 4, sampling=sampling)


def test_generator_cancellation_frees_the_engine(generator: tuple[ServiceProcess, int]) -> None:
    service, port = generator
    small = generator_pb2.GenerateRequest(
        prompts=[PROMPT], sampling=common_pb2.SamplingParams(n=1, temperature=0, top_p=1, max_tokens=4)
    )
    with grpc.insecure_channel(service.target) as channel:
        stub = generator_pb2_grpc.GeneratorServiceStub(channel)
        stub.Generate(small, timeout=60)  # warm
        cancelled = metric(service, "sgpo_generator_requests_total", transport="grpc", code="CANCELLED")
        # gRPC: the caller cancels a long request; its rows leave the running batch
        future = stub.Generate.future(_long_generate(stub), timeout=120)
        time.sleep(1.0)
        future.cancel()
        t0 = time.monotonic()
        stub.Generate(small, timeout=60)
        grpc_wait = time.monotonic() - t0
        # the engine dropped the work (the handler ended with CANCELLED, not OK after the whole batch)
        assert (
            wait_metric(
                service, "sgpo_generator_requests_total", cancelled + 1, transport="grpc", code="CANCELLED"
            )
            == cancelled + 1
        )
        assert metric(service, "sgpo_generator_requests_total", transport="grpc", code="OK") == 2
    # HTTP: the client goes away in the middle of a long completion
    gone = metric(service, "sgpo_generator_requests_total", transport="http", code="499")
    body = json.dumps({"prompt": ["Start"] * 4, "n": 64, "max_tokens": 480}).encode()
    with connect(port) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(1.0)
    t0 = time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
        r = c.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200
    http_wait = time.monotonic() - t0
    assert (
        wait_metric(service, "sgpo_generator_requests_total", gone + 1, transport="http", code="499")
        == gone + 1
    )
    assert "Traceback" not in service.log()
    print(f"next caller served after cancel: grpc {grpc_wait:.2f}s, http {http_wait:.2f}s")


# ------------------------------------------------------------------------------------------------ verifier

HANGS = ("1", "\\boxed{\\int_0^1 e^{-x^{100}} \\sin(x^{99}) dx}")
SYMBOLIC = ("x^2 + 2x + 1", "\\boxed{(x+1)^2}")


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    env = {"SGPO_VERIFIER__WORKERS": "1", "SGPO_VERIFIER__DEADLINE_S": "60"}
    with run_service("verifier", tmp_path_factory.mktemp("verifier"), env=env) as service:
        yield service
        assert service.stop() == 0


def _verify_request(*items: tuple[str, str]) -> verifier_pb2.VerifyRequest:
    return verifier_pb2.VerifyRequest(items=[verifier_pb2.VerifyItem(gold=g, pred=p) for g, p in items])


def test_verifier_refuses_a_200mb_message_unread(verifier: ServiceProcess) -> None:
    before = rss_mb(verifier.proc.pid)
    with grpc.insecure_channel(verifier.target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/sgpo.v1.VerifierService/Verify")(big_string_field(BIG), timeout=60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rss_mb(verifier.proc.pid) - before < 50


def test_verifier_cancellation_frees_the_worker(verifier: ServiceProcess) -> None:
    with grpc.insecure_channel(verifier.target) as channel:
        stub = verifier_pb2_grpc.VerifierServiceStub(channel)
        assert stub.Verify(_verify_request(SYMBOLIC), timeout=60).verdicts[0].status  # warm
        # one worker, busy with a check that would run to its 60 s deadline; the caller cancels
        future = stub.Verify.future(_verify_request(HANGS), timeout=120)
        time.sleep(1.0)
        future.cancel()
        t0 = time.monotonic()
        resp = stub.Verify(_verify_request(SYMBOLIC), timeout=30)  # would wait ~60 s behind the hang
        wait = time.monotonic() - t0
    assert resp.verdicts[0].status == common_pb2.VERDICT_STATUS_CORRECT, resp.verdicts[0].reason
    assert wait_metric(verifier, "sgpo_verifier_worker_restarts_total", 1, reason="cancel") == 1
    print(f"verifier: next caller served {wait:.2f}s after the cancel")


# ------------------------------------------------------------------------------------------------ sharing


def test_one_requests_failure_does_not_fail_its_batch_mates(tiny_policy: str) -> None:
    """A request whose decoding raises (here: any batch holding a request with max_tokens = 7, standing in for
    a row whose output breaks the detokenizer) fails alone; the requests batched with it complete, and a
    seeded one draws the same completions as when it runs alone."""
    from sgpo.generator.hf import HFEngine
    from sgpo.generator.sampling import SamplingParams

    calls: list[int] = []  # requests in each batch run

    class Faulty(HFEngine):
        def _run_batch(self, weights, rows):  # type: ignore[no-untyped-def]
            calls.append(len({id(r.request) for r in rows}))
            if any(r.request.params.max_tokens == 7 for r in rows):
                raise RuntimeError("bad output")
            return super()._run_batch(weights, rows)

    engine = Faulty(tiny_policy, batch_wait_s=0.5)
    try:
        good = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=11)
        alone = engine.generate([PROMPT], good)
        results: dict[str, object] = {}

        def run(name: str, params: SamplingParams) -> None:
            try:
                results[name] = engine.generate([PROMPT], params)
            except Exception as e:
                results[name] = e

        threads = [
            threading.Thread(target=run, args=("good", good)),
            threading.Thread(target=run, args=("bad", SamplingParams(n=2, max_tokens=7))),
        ]
        calls.clear()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert isinstance(results["bad"], RuntimeError)
        assert results["good"] == alone
        assert sorted(calls) == [1, 1, 2]  # one shared batch, then each request alone
    finally:
        engine.close()


def test_a_large_request_does_not_hold_a_small_one_behind_it(tiny_policy: str) -> None:
    """Batches are filled round-robin over waiting requests: a small request that arrives behind 4 batches'
    worth of rows finishes while the large one is still running."""
    from sgpo.generator.hf import HFEngine
    from sgpo.generator.sampling import SamplingParams

    engine = HFEngine(tiny_policy, max_batch_size=16, batch_wait_s=0.0)
    order: list[str] = []
    try:
        large = threading.Thread(
            target=lambda: (
                engine.generate(["Start"] * 4, SamplingParams(n=16, max_tokens=8)),
                order.append("large"),
            )
        )
        large.start()
        while engine.stats["batches"] == 0:
            time.sleep(0.01)
        engine.generate([PROMPT], SamplingParams(n=1, max_tokens=8))
        order.append("small")
        large.join(120)
        assert order == ["small", "large"]
    finally:
        engine.close()
