"""`sgpo serve generator`: gRPC GeneratorService and the OpenAI-compatible HTTP API in one process.

Order: bind gRPC (health NOT_SERVING), bind HTTP (/health 503, requests 503), load the engine, flip both to
serving; SIGTERM drains gRPC, stops HTTP and closes the engine.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import grpc

from sgpo.common import auth
from sgpo.common.convert import completion_to_pb
from sgpo.common.http import HttpServer
from sgpo.common.server import UnavailableError, error_code_name, serve_grpc
from sgpo.core.errors import InvalidInputError
from sgpo.generator.config import GeneratorConfig
from sgpo.generator.engine import Engine, confine_weights_uri
from sgpo.generator.factory import build_engine
from sgpo.generator.metrics import GeneratorMetrics
from sgpo.generator.sampling import RequestLimits, SamplingParams, check_request
from sgpo.v1 import common_pb2, generator_pb2, generator_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = generator_pb2.DESCRIPTOR.services_by_name["GeneratorService"].full_name


def sampling_from_pb(m: common_pb2.SamplingParams) -> SamplingParams:
    """Every field as sent (proto3 cannot tell 0 from unset: n, top_p and max_tokens must be set)."""
    return SamplingParams(
        n=m.n,
        temperature=m.temperature,
        top_p=m.top_p,
        max_tokens=m.max_tokens,
        stop=tuple(m.stop),
        seed=m.seed if m.HasField("seed") else None,
    )


class GeneratorState:
    """The engine once loaded, shared by both transports."""

    def __init__(self, cfg: GeneratorConfig, metrics: GeneratorMetrics) -> None:
        self.cfg, self.metrics = cfg, metrics
        self.engine: Engine | None = None
        self.limits = RequestLimits(
            max_n=cfg.max_n,
            max_prompts=cfg.max_prompts,
            max_completions=cfg.max_completions,
            max_request_chars=cfg.max_request_chars,
        )

    def require(self) -> Engine:
        if self.engine is None:
            raise UnavailableError("the model is still loading; retry when health reports SERVING")
        return self.engine


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    """Thin: proto -> engine -> proto; errors are mapped by the shared interceptor."""

    def __init__(self, state: GeneratorState) -> None:
        self.state = state

    def Generate(
        self, request: generator_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> generator_pb2.GenerateResponse:
        start, code = time.perf_counter(), "OK"
        try:
            if not request.HasField("sampling"):
                raise InvalidInputError(
                    "sampling", "is required (n, temperature, top_p, max_tokens at least)"
                )
            params = sampling_from_pb(request.sampling)
            prompts = list(request.prompts)
            check_request(prompts, params, self.state.limits)
            engine = self.state.require()
            cancel = threading.Event()
            # the client cancelling (or its deadline passing) drops the request's rows in the engine
            context.add_callback(cancel.set)
            if not context.is_active():
                cancel.set()
            results = engine.generate(prompts, params, cancel)
            self.state.metrics.observe_results(results)
            return generator_pb2.GenerateResponse(
                results=[
                    generator_pb2.PromptCompletions(
                        prompt_token_ids=r.prompt_token_ids,
                        completions=[completion_to_pb(c) for c in r.completions],
                    )
                    for r in results
                ]
            )
        except Exception as e:
            code = error_code_name(e)
            raise
        finally:
            self.state.metrics.latency.labels("grpc").observe(time.perf_counter() - start)
            self.state.metrics.requests.labels("grpc", code).inc()

    def UpdateWeights(
        self, request: generator_pb2.UpdateWeightsRequest, context: grpc.ServicerContext
    ) -> generator_pb2.UpdateWeightsResponse:
        engine = self.state.require()
        start = time.perf_counter()
        try:
            uri = confine_weights_uri(request.uri, self.state.cfg.weights_root)
            version = engine.update_weights(request.version, uri)
        except Exception:
            self.state.metrics.weight_updates.labels("rejected").inc()
            raise
        self.state.metrics.weight_updates.labels("ok").inc()
        self.state.metrics.weight_load.observe(time.perf_counter() - start)
        self.state.metrics.policy_version.set(version)
        return generator_pb2.UpdateWeightsResponse(version=version)

    def GetInfo(
        self, request: generator_pb2.GetInfoRequest, context: grpc.ServicerContext
    ) -> generator_pb2.GetInfoResponse:
        engine = self.state.require()
        return generator_pb2.GetInfoResponse(
            model=engine.model_name, engine=engine.name, policy_version=engine.policy_version
        )


def http_api_key(cfg: GeneratorConfig) -> str | None:
    """The key HTTP callers must send: `api_key`, else `api_key_file`'s; else none on a loopback host (as
    `vllm serve` without --api-key), and on any other host one generated into a 0600 file (path logged)."""
    if cfg.api_key is not None:
        return cfg.api_key.get_secret_value()
    if cfg.api_key_file:
        return auth.read_secret_file(cfg.api_key_file, "API key")
    if auth.is_loopback(cfg.host):
        return None
    key = auth.generate_secret()
    path = auth.write_secret_file(auth.generated_secret_path("generator", "api-key"), key)
    log.warning(
        "no api_key configured and HTTP is not on loopback: generated one into a 0600 file; callers send "
        "Authorization: Bearer <key> (set SGPO_GENERATOR__API_KEY or api_key_file to choose your own)",
        extra={"api_key_file": str(path)},
    )
    return key


_COSTLY = ("/v1/completions", "/v1/chat/completions")


def build_http_app(state: GeneratorState) -> Any:
    """The OpenAI-compatible app with request metrics, body limits, admission and the clean error path
    (sgpo.common.http.LimitsMiddleware)."""
    from sgpo.common.http import LimitsMiddleware
    from sgpo.generator.openai_api import build_app, error_body

    app = build_app(lambda: state.engine, api_key=http_api_key(state.cfg), limits=state.limits)

    def done(path: str, status: int, seconds: float) -> None:
        if path in _COSTLY:
            state.metrics.latency.labels("http").observe(seconds)
            state.metrics.requests.labels("http", str(status)).inc()

    app.add_middleware(
        LimitsMiddleware,
        limits=state.cfg.http_limits,
        error_body=error_body,
        costly=lambda path: path in _COSTLY,
        on_done=done,
        exempt=("/health",),
    )
    return app


def serve(cfg: GeneratorConfig) -> None:
    metrics = GeneratorMetrics()
    state = GeneratorState(cfg, metrics)
    http: HttpServer | None = None

    def register(server: grpc.Server) -> list[str]:
        generator_pb2_grpc.add_GeneratorServiceServicer_to_server(GeneratorServicer(state), server)
        return [SERVICE_NAME]

    def load() -> None:
        nonlocal http
        if cfg.http_enabled:
            http = HttpServer(
                build_http_app(state),
                cfg.host,
                cfg.http_port,
                cfg.grace_period_s,
                service="generator",
                limits=cfg.http_limits,
            )
            http.start()
            log.info("http listening", extra={"http_port": http.port})
        t0 = time.monotonic()
        state.engine = build_engine(cfg)
        metrics.policy_version.set(state.engine.policy_version)
        metrics.ready.set(1)
        log.info(
            "engine loaded",
            extra={
                "engine": cfg.engine,
                "model": state.engine.model_name,
                "seconds": round(time.monotonic() - t0, 2),
            },
        )

    def on_stop() -> None:
        metrics.ready.set(0)
        if http is not None:
            http.stop(cfg.grace_period_s + 5)
        if state.engine is not None:
            state.engine.close()

    serve_grpc(cfg, register, registry=metrics.registry, load=load, on_stop=on_stop)
