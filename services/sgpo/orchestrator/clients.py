"""gRPC clients of generator, verifier and judge, with deadlines and retries with exponential backoff.

The generator is a pool of replicas (`GeneratorPool`): each Generate call goes to the replica with the fewest
calls in flight among those that hold the policy version the staleness bound asks for (docs/design.md §3 step
7). A replica's version is read from its `GetInfo` just before it is chosen, so a replica that restarted with
the initial weights is left out until the trainer has sent it the newest ones; a replica that does not answer
is left out until it does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from sgpo.common import auth
from sgpo.common.server import GRPC_OPTIONS
from sgpo.orchestrator.config import RetryConfig
from sgpo.v1 import generator_pb2, generator_pb2_grpc, judge_pb2_grpc, verifier_pb2_grpc

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


class NoReplicaError(grpc.RpcError):
    """No generator replica answered with the policy version asked for in time (retryable: UNAVAILABLE)."""

    def __init__(self, details: str) -> None:
        super().__init__(details)
        self._details = details

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return self._details


@dataclass
class Replica:
    target: str
    channel: grpc.Channel
    stub: generator_pb2_grpc.GeneratorServiceStub
    outstanding: int = 0
    """Generate calls in flight on this replica."""
    calls: int = 0
    """Generate calls sent to this replica so far."""
    version: int | None = None
    """The policy version it reported last (None: it did not answer)."""


class GeneratorPool:
    """Generator replicas balanced by least outstanding requests, gated by each replica's policy version."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        info_timeout_s: float = 5.0,
        wait_s: float = 600.0,
        poll_s: float = 0.5,
    ) -> None:
        if not targets:
            raise ValueError("no generator target given; set generator_target to one host:port or several")
        self.replicas = []
        for t in targets:
            channel = auth.channel(t, options=GRPC_OPTIONS)
            self.replicas.append(Replica(t, channel, generator_pb2_grpc.GeneratorServiceStub(channel)))
        self.info_timeout_s, self.wait_s, self.poll_s = info_timeout_s, wait_s, poll_s
        self._lock = threading.Lock()
        self._turn = 0  # rotates the order among equally loaded replicas

    def _version(self, replica: Replica) -> int | None:
        try:
            info = replica.stub.GetInfo(generator_pb2.GetInfoRequest(), timeout=self.info_timeout_s)
            replica.version = int(info.policy_version)
        except grpc.RpcError:
            replica.version = None
        return replica.version

    def versions(self) -> dict[str, int | None]:
        """Every replica's policy version as it reports it now (None: it does not answer)."""
        return {r.target: self._version(r) for r in self.replicas}

    def acquire(self, min_version: int = 0, stop: threading.Event | None = None) -> Replica:
        """The least loaded replica holding policy version >= `min_version` (its outstanding count taken).

        Waits up to `wait_s` for one; raises `NoReplicaError` (UNAVAILABLE, so callers retry) past it.
        """
        deadline = time.monotonic() + self.wait_s
        while True:
            with self._lock:
                self._turn += 1
                n = len(self.replicas)
                order = sorted(range(n), key=lambda i: (self.replicas[i].outstanding, (i - self._turn) % n))
            for i in order:
                replica = self.replicas[i]
                version = self._version(replica)
                if version is not None and version >= min_version:
                    with self._lock:
                        replica.outstanding += 1
                        replica.calls += 1
                    return replica
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                seen = ", ".join(
                    f"{r.target}: {'down' if r.version is None else f'v{r.version}'}" for r in self.replicas
                )
                raise NoReplicaError(
                    f"no generator replica holds policy version >= {min_version} ({seen}); the trainer sends "
                    "the newest weights to every replica that answers"
                )
            if stop is not None:
                stop.wait(self.poll_s)
            else:
                time.sleep(self.poll_s)

    def release(self, replica: Replica) -> None:
        with self._lock:
            replica.outstanding -= 1

    def generate(
        self,
        request: generator_pb2.GenerateRequest,
        timeout: float,
        min_version: int = 0,
        stop: threading.Event | None = None,
    ) -> generator_pb2.GenerateResponse:
        """`Generate` on the chosen replica; a failed call is raised for `call_with_retry` (the next try picks
        again, so a replica that died is passed over)."""
        replica = self.acquire(min_version, stop)
        try:
            return replica.stub.Generate(request, timeout=timeout)
        except grpc.RpcError:
            replica.version = None
            raise
        finally:
            self.release(replica)

    def close(self) -> None:
        for r in self.replicas:
            r.channel.close()


class Clients:
    """One channel per service (a pool of them for the generator replicas); channels reconnect by themselves
    when a service restarts."""

    def __init__(
        self, generator: str | Sequence[str], verifier: str, judge: str, *, replica_wait_s: float = 600.0
    ) -> None:
        targets = [generator] if isinstance(generator, str) else list(generator)
        self.generators = GeneratorPool(targets, wait_s=replica_wait_s)
        self._channels = [auth.channel(t, options=GRPC_OPTIONS) for t in (verifier, judge)]
        self.verifier = verifier_pb2_grpc.VerifierServiceStub(self._channels[0])
        self.judge = judge_pb2_grpc.JudgeServiceStub(self._channels[1])

    def close(self) -> None:
        self.generators.close()
        for c in self._channels:
            c.close()
