"""`sgpo serve judge`: gRPC JudgeService.Judge and HTTP POST /v1/judge in one process.

Order: bind gRPC (health NOT_SERVING), bind HTTP (/healthz 503, requests 503), load the backend, flip both
to serving; SIGTERM drains gRPC, stops HTTP and closes the backend. Without configured API keys one is
generated for the run and written to the log.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc

from sgpo.common import auth
from sgpo.common.convert import judgement_to_pb
from sgpo.common.http import HttpServer
from sgpo.common.server import ResourceExhaustedError, error_code_name, serve_grpc
from sgpo.judge.config import JudgeConfig
from sgpo.judge.judge import build_judge
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.state import JudgeState
from sgpo.judge.types import JudgeItem
from sgpo.v1 import judge_pb2, judge_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = judge_pb2.DESCRIPTOR.services_by_name["JudgeService"].full_name


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    """Thin: proto -> JudgeItem -> Judge.judge -> proto (steps, first error, step lengths; the orchestrator
    scores them with sgpo.core); errors are mapped by the shared interceptor."""

    def __init__(self, state: JudgeState) -> None:
        self.state = state

    def Judge(
        self, request: judge_pb2.JudgeRequest, context: grpc.ServicerContext
    ) -> judge_pb2.JudgeResponse:
        start, code = time.perf_counter(), "OK"
        try:
            size = request.ByteSize()
            if size > self.state.cfg.max_request_bytes:
                raise ResourceExhaustedError(
                    f"request of {size} bytes exceeds max_request_bytes = {self.state.cfg.max_request_bytes}; "
                    "send fewer or shorter responses per request"
                )
            judge = self.state.require()
            items = [
                JudgeItem(it.response, tuple(it.steps), tuple(it.token_char_starts)) for it in request.items
            ]
            out = judge.judge(request.problem, request.reference_solution, items)
            return judge_pb2.JudgeResponse(judgements=[judgement_to_pb(j) for j in out])
        except Exception as e:
            code = error_code_name(e)
            raise
        finally:
            self.state.metrics.request_latency.labels("grpc").observe(time.perf_counter() - start)
            self.state.metrics.requests.labels("grpc", code).inc()


def start_http(state: JudgeState) -> HttpServer:
    from sgpo.judge.api import build_app, http_limits

    cfg = state.cfg
    http = HttpServer(
        build_app(cfg, state),
        cfg.host,
        cfg.http_port,
        cfg.grace_period_s,
        service="judge",
        limits=http_limits(cfg),
    )
    http.start()
    return http


def serve(cfg: JudgeConfig) -> None:
    metrics = JudgeMetrics()
    keys = tuple(k.get_secret_value() for k in cfg.api_keys)
    if cfg.api_keys_file:
        keys += tuple(auth.read_secret_lines(cfg.api_keys_file, "API key"))
    generated: Path | None = None
    if not keys and cfg.http_enabled:
        keys = (auth.generate_secret(),)
        generated = auth.write_secret_file(auth.generated_secret_path("judge", "api-key"), keys[0])
    state = JudgeState(cfg, metrics, keys)
    http: HttpServer | None = None

    def register(server: grpc.Server) -> list[str]:
        judge_pb2_grpc.add_JudgeServiceServicer_to_server(JudgeServicer(state), server)  # type: ignore[no-untyped-call]
        return [SERVICE_NAME]

    def load() -> None:
        nonlocal http
        if cfg.http_enabled:
            http = start_http(state)
            log.info("http listening", extra={"http_port": http.port})
            if generated:
                log.warning(
                    "no api_keys configured: generated one for this run into a 0600 file; HTTP callers "
                    "send it as X-API-Key (set SGPO_JUDGE__API_KEYS or api_keys_file to choose your own)",
                    extra={"api_key_file": str(generated)},
                )
        state.judge = build_judge(cfg, metrics)
        metrics.ready.set(1)
        log.info("backend loaded", extra={"backend": cfg.backend.type})

    def on_stop() -> None:
        metrics.ready.set(0)
        if http is not None:
            http.stop(cfg.grace_period_s + 5)
        if state.judge is not None:
            state.judge.close()

    serve_grpc(cfg, register, registry=metrics.registry, load=load, on_stop=on_stop)
