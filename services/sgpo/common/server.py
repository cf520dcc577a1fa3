"""The gRPC service shell: bind first, health NOT_SERVING until ready, Prometheus /metrics, graceful SIGTERM.

A service provides `register(server) -> [service names]` and an optional `load()` (model, Redis...);
`serve_grpc` does the rest the same way for every service. Domain errors become status codes in one
place (`ErrorInterceptor`); anything unexpected is INTERNAL with a sanitized message.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from sgpo.common import auth
from sgpo.common.settings import ServiceConfig
from sgpo.core.errors import InvalidInputError

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024 * 1024
HEALTH_POLL_S = 0.5
# Channel (client) options: a client may receive large answers (a generator's batch of completions).
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# What a server accepts unless its config says otherwise (`grpc_max_receive_bytes`): the control RPCs of the
# orchestrator and trainer are small. gRPC refuses a larger message from its length prefix, with
# RESOURCE_EXHAUSTED, before reading it (docs/design.md, "6. Limits").
DEFAULT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024


def server_options(max_receive_bytes: int) -> list[tuple[str, int]]:
    """gRPC server options: answers up to MAX_MESSAGE_BYTES, requests up to `max_receive_bytes`."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", max_receive_bytes),
    ]


class ServiceError(Exception):
    """A domain error with the status it maps to (both transports use it)."""

    code = grpc.StatusCode.INTERNAL
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnavailableError(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class ResourceExhaustedError(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 413


class BadRequestError(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422


def error_code_name(exc: BaseException) -> str:
    """The status name a handler's exception maps to, for the `code` label of request metrics."""
    if isinstance(exc, ServiceError):
        return str(exc.code.name)
    return "INVALID_ARGUMENT" if isinstance(exc, InvalidInputError) else "INTERNAL"


def map_exception(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
    """(status, message) for an exception raised by a handler; unexpected ones are logged and sanitized."""
    if isinstance(exc, ServiceError):
        return exc.code, exc.message
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    log.error("unhandled error in %s", method, exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log"


class ErrorInterceptor(grpc.ServerInterceptor):
    def intercept_service(self, continuation: Callable[[Any], Any], handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner, method = handler.unary_unary, handler_call_details.method

        def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return inner(request, context)
            except Exception as exc:
                if context.code() not in (None, grpc.StatusCode.OK):  # the handler already aborted
                    raise
                code, message = map_exception(exc, method)
                context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass
class RunningServer:
    """A started gRPC server with its health servicer and metrics endpoint (for tests and `serve_grpc`)."""

    server: grpc.Server
    port: int
    metrics_port: int
    health: health.HealthServicer
    service_names: list[str]
    _metrics_server: Any = None
    stopped: threading.Event = field(default_factory=threading.Event)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace: float) -> None:
        self.set_serving(False)
        self.server.stop(grace).wait()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
        self.stopped.set()


def service_token(cfg: ServiceConfig) -> str | None:
    """The service token this server checks (sgpo.common.auth); this process's clients send the same one."""
    token = auth.resolve_service_token(cfg.service_token_file)
    auth.set_process_token(token)
    if token is None and not auth.is_loopback(cfg.host):
        log.warning(
            "no service token: gRPC calls are not authenticated; set %s or %s for a deployment",
            auth.TOKEN_ENV,
            auth.TOKEN_FILE_ENV,
        )
    return token


def start_grpc(
    cfg: ServiceConfig,
    register: Callable[[grpc.Server], Iterable[str]],
    registry: CollectorRegistry | None = None,
) -> RunningServer:
    """Bind and start the server with health NOT_SERVING; the caller flips it once ready."""
    token = service_token(cfg)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix=cfg.service),
        interceptors=[*auth.server_interceptors(token), ErrorInterceptor()],
        options=server_options(int(getattr(cfg, "grpc_max_receive_bytes", DEFAULT_MAX_RECEIVE_BYTES))),
    )
    names = list(register(server))
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(f"{cfg.host}:{cfg.port}")
    if port == 0:
        raise OSError(f"could not bind {cfg.host}:{cfg.port}; is the port in use? set a free one with --port")
    metrics_server, metrics_port = None, 0
    if registry is not None:
        metrics_server, _ = start_http_server(cfg.metrics_port, addr=cfg.host, registry=registry)
        metrics_port = metrics_server.server_port
    running = RunningServer(server, port, metrics_port, health_servicer, names, metrics_server)
    running.set_serving(False)
    server.start()
    return running


def serve_grpc(
    cfg: ServiceConfig,
    register: Callable[[grpc.Server], Iterable[str]],
    *,
    registry: CollectorRegistry | None = None,
    load: Callable[[], None] | None = None,
    on_stop: Callable[[], None] | None = None,
    main: Callable[[threading.Event], None] | None = None,
    healthy: Callable[[], bool] | None = None,
) -> None:
    """Run a service until SIGTERM/SIGINT: bind, load, report SERVING, then drain and stop.

    `main(stop)`, if given, is the service's own work (the orchestrator's loop, the trainer's steps), run in a
    thread once SERVING; it must return soon after `stop` is set, and when it returns the service stops.
    `healthy()`, if given, is polled every HEALTH_POLL_S once loaded: health follows it (NOT_SERVING while a
    dependency such as the Redis queue is unreachable, SERVING again after).
    """
    running = start_grpc(cfg, register, registry)
    log.info("listening", extra={"port": running.port, "metrics_port": running.metrics_port})
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker: threading.Thread | None = None
    failed: list[BaseException] = []
    try:
        if load is not None:
            load()
        running.set_serving(True)
        log.info("serving", extra={"port": running.port, "metrics_port": running.metrics_port})
        if main is not None:

            def work() -> None:
                try:
                    main(stop)
                except BaseException as e:
                    log.error("service main loop failed", exc_info=e)
                    failed.append(e)
                finally:
                    stop.set()

            worker = threading.Thread(target=work, name=f"{cfg.service}-main")
            worker.start()
        serving = True
        while not stop.wait(HEALTH_POLL_S if healthy is not None else None):
            try:
                now = bool(healthy()) if healthy is not None else True
            except Exception as e:  # a probe that fails is a dependency that is not there
                log.debug("health probe failed", exc_info=e)
                now = False
            if now != serving:
                serving = now
                running.set_serving(now)
        log.info("shutting down", extra={"grace_period_s": cfg.grace_period_s})
    finally:
        stop.set()
        if worker is not None:
            worker.join()
        running.stop(cfg.grace_period_s)
        if on_stop is not None:
            on_stop()
        log.info("stopped")
    if failed:
        raise SystemExit(1)


def wait_for_health(target: str, timeout_s: float = 30.0, service: str = "") -> None:
    """Block until the gRPC server at `target` reports SERVING (raises TimeoutError otherwise)."""
    import time

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} did not report SERVING within {timeout_s:.0f}s")
            time.sleep(0.1)
