"""`sgpo serve trainer`: the gRPC TrainerService (status, pause/resume, checkpoint-now) around the loop.

Health is NOT_SERVING until the policy is loaded (and the checkpoint resumed), and while the Redis queue is
unreachable (training waits for it; SERVING again once it answers). Under torchrun only rank 0
binds the gRPC and metrics ports; the other ranks run the loop and follow rank 0's commands.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

import grpc

from sgpo.common.server import UnavailableError, serve_grpc
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.loop import Trainer
from sgpo.trainer.metrics import TrainerMetrics
from sgpo.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)

CHECKPOINT_NOW_TIMEOUT_S = 600.0


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def _status(self) -> trainer_pb2.TrainerStatus:
        s = self.trainer.status()
        return trainer_pb2.TrainerStatus(
            step=s.step,
            policy_version=s.policy_version,
            paused=s.paused,
            queue_lag=s.queue_lag,
            last_checkpoint=s.last_checkpoint,
            groups_consumed=s.groups_consumed,
            queue_backlog=s.queue_backlog,
            pending_groups=s.pending_groups,
        )

    def GetStatus(self, request: Any, context: grpc.ServicerContext) -> trainer_pb2.TrainerStatus:
        return self._status()

    def Pause(self, request: Any, context: grpc.ServicerContext) -> trainer_pb2.TrainerStatus:
        # Returns once no step is in progress (its weights published), so a caller can evaluate one policy.
        self.trainer.pause(wait_s=120.0)
        return self._status()

    def Resume(self, request: Any, context: grpc.ServicerContext) -> trainer_pb2.TrainerStatus:
        self.trainer.resume()
        return self._status()

    def CheckpointNow(self, request: Any, context: grpc.ServicerContext) -> trainer_pb2.CheckpointNowResponse:
        if not self.trainer.loaded.is_set():
            raise UnavailableError(
                "the trainer is still loading the model; retry once health reports SERVING"
            )
        try:
            path, step = self.trainer.request_checkpoint(CHECKPOINT_NOW_TIMEOUT_S)
        except TimeoutError:
            raise UnavailableError(
                f"no checkpoint within {CHECKPOINT_NOW_TIMEOUT_S:.0f}s; the trainer is busy, retry later"
            ) from None
        return trainer_pb2.CheckpointNowResponse(path=path, step=step)


def die_with_parent() -> None:
    """SIGKILL this process when its parent dies (Linux PR_SET_PDEATHSIG; a no-op elsewhere)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def serve(cfg: TrainerConfig) -> None:
    try:
        cfg.require_model()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    import torch

    from sgpo.trainer.distributed import init_distributed

    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # Under torchrun: die with the agent. A launcher or supervisor that kills torchrun (kill -9 included)
        # must not leave ranks behind holding the gRPC port and the process group.
        die_with_parent()
    dist = init_distributed(use_cuda)
    metrics = TrainerMetrics()
    trainer = Trainer(cfg, metrics, dist)
    finished = False
    try:
        if dist.is_main:

            def register(server: grpc.Server) -> Iterable[str]:
                trainer_pb2_grpc.add_TrainerServiceServicer_to_server(TrainerServicer(trainer), server)
                return ["sgpo.v1.TrainerService"]

            serve_grpc(
                cfg,
                register,
                registry=metrics.registry,
                load=trainer.load,
                main=trainer.run,
                healthy=lambda: (
                    trainer.queue_ok.is_set() and (trainer.queue is None or trainer.queue.reachable())
                ),
            )
        else:
            # Rank 0 decides when to stop (torchrun signals every rank); the others follow its broadcast
            # and keep their logs to warnings (rank 0 reports for all).
            logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: None)
            trainer.load()
            trainer.run(threading.Event())
        finished = True
    finally:
        dist.close(finished)
    if finished and not dist.is_main:
        # A rank > 0 has nothing left to write (rank 0 writes checkpoints and weights, and reports): skip interpreter
        # teardown, where a CI run saw one such rank abort after a complete run ("terminate called without an
        # active exception", exit -6, torchrun failing the job).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
