"""gRPC clients of generator, verifier and judge, with deadlines and retries with exponential backoff."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from sgpo.common.server import GRPC_OPTIONS
from sgpo.orchestrator.config import RetryConfig
from sgpo.v1 import generator_pb2_grpc, judge_pb2_grpc, verifier_pb2_grpc

log = logging.getLogger(__name__)
R = TypeVar("R")

RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNKNOWN,
}


class ServiceCallError(RuntimeError):
    """A call that failed for good (non-retryable status, or retries exhausted)."""

    def __init__(self, service: str, code: grpc.StatusCode | None, details: str, attempts: int) -> None:
        super().__init__(
            f"{service} failed after {attempts} attempt(s): {code.name if code else '?'}: {details}"
        )
        self.service, self.code, self.details = service, code, details


def call_with_retry(
    service: str,
    fn: Callable[..., R],
    request: Any,
    *,
    timeout_s: float,
    retry: RetryConfig,
    stop: threading.Event | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> R:
    delay = retry.backoff_s
    for attempt in range(1, retry.attempts + 1):
        try:
            return fn(request, timeout=timeout_s)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            if code not in RETRYABLE or attempt == retry.attempts or (stop is not None and stop.is_set()):
                raise ServiceCallError(service, code, str(details), attempt) from None
            log.warning(
                "retrying",
                extra={"target_service": service, "attempt": attempt, "code": str(code), "wait_s": delay},
            )
            if on_retry is not None:
                on_retry(service)
            if stop is not None:
                stop.wait(delay)
            else:
                time.sleep(delay)
            delay = min(max(delay * 2, 0.05), retry.max_backoff_s)
    raise AssertionError("unreachable")


class Clients:
    """One channel per service; channels reconnect by themselves when a service restarts."""

    def __init__(self, generator: str, verifier: str, judge: str) -> None:
        self._channels = [
            grpc.insecure_channel(t, options=GRPC_OPTIONS) for t in (generator, verifier, judge)
        ]
        self.generator = generator_pb2_grpc.GeneratorServiceStub(self._channels[0])
        self.verifier = verifier_pb2_grpc.VerifierServiceStub(self._channels[1])
        self.judge = judge_pb2_grpc.JudgeServiceStub(self._channels[2])

    def close(self) -> None:
        for c in self._channels:
            c.close()
