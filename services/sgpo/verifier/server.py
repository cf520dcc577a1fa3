"""gRPC shell of the verifier: `VerifierServicer` (thin) and `serve(cfg)` (`sgpo serve verifier`).

The worker processes start in `load()`, after the port is bound: health reports NOT_SERVING until
they are up. Bad requests (wrong pair shapes, a negative deadline, too many items) map to
INVALID_ARGUMENT through the shared interceptor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc

from sgpo.common.convert import verdict_to_pb
from sgpo.common.server import RunningServer, UnavailableError, serve_grpc, start_grpc
from sgpo.core.errors import InvalidInputError
from sgpo.v1 import verifier_pb2, verifier_pb2_grpc
from sgpo.verifier.config import VerifierConfig
from sgpo.verifier.metrics import VerifierMetrics
from sgpo.verifier.verifier import MathVerifier

SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name
# Keep this much of the caller's gRPC deadline for serializing the answer.
_DEADLINE_MARGIN_S = 0.25


class VerifierServicer(verifier_pb2_grpc.VerifierServiceServicer):
    def __init__(self, get_verifier: Callable[[], MathVerifier | None]) -> None:
        self._get = get_verifier

    def Verify(
        self, request: verifier_pb2.VerifyRequest, context: grpc.ServicerContext
    ) -> verifier_pb2.VerifyResponse:
        verifier = self._get()
        if verifier is None:
            raise UnavailableError("the verifier is still starting its workers; retry shortly")
        if request.deadline_s < 0:
            raise InvalidInputError(
                "deadline_s", f"must be >= 0 (0: server default); got {request.deadline_s}"
            )
        items = [(it.gold, it.pred) for it in request.items]
        tolerances = [tuple(it.tolerance) or None for it in request.items]
        remaining = context.time_remaining()
        timeout_s = None if remaining is None else max(0.0, remaining - _DEADLINE_MARGIN_S)
        cancel = threading.Event()
        context.add_callback(cancel.set)  # a cancelled call frees its workers for the next caller
        if not context.is_active():
            cancel.set()
        verdicts = verifier.verify_batch(
            items,
            request.deadline_s or None,
            tolerances=tolerances if any(t is not None for t in tolerances) else None,
            timeout_s=timeout_s,
            cancel=cancel,
        )
        return verifier_pb2.VerifyResponse(verdicts=[verdict_to_pb(v) for v in verdicts])


def _register(servicer: VerifierServicer) -> Callable[[grpc.Server], list[str]]:
    def register(server: grpc.Server) -> list[str]:
        verifier_pb2_grpc.add_VerifierServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return register


def start(cfg: VerifierConfig, verifier: MathVerifier) -> RunningServer:
    """An in-process server around an existing verifier, already SERVING (for tests and embedding)."""
    running = start_grpc(cfg, _register(VerifierServicer(lambda: verifier)), verifier.metrics.registry)
    running.set_serving(True)
    return running


def serve(cfg: VerifierConfig) -> None:
    """Run until SIGTERM: bind, start the workers, serve, then stop the workers."""
    metrics = VerifierMetrics()
    holder: dict[str, MathVerifier] = {}

    def load() -> None:
        verifier = MathVerifier(cfg, metrics)
        verifier.wait_ready()
        holder["verifier"] = verifier

    def on_stop() -> None:
        if "verifier" in holder:
            holder["verifier"].close()

    servicer = VerifierServicer(lambda: holder.get("verifier"))
    serve_grpc(cfg, _register(servicer), registry=metrics.registry, load=load, on_stop=on_stop)
