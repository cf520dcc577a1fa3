"""torch.distributed plumbing for the trainer: one process, or several under `torchrun` (FSDP2 shards).

Rank 0 alone talks to Redis, the generator and gRPC clients; it broadcasts each step's groups and its
decisions (stop, checkpoint) so every rank runs the same collectives in the same order.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: Any) -> Any:
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def close(self, finished: bool = False) -> None:
        """Leave the process group. `finished` (the run ended normally on this rank): first wait, up to a minute,
        until every rank is here, so no rank tears down its connections while a peer still uses its own."""
        if self.enabled:
            import torch.distributed as dist

            if not dist.is_initialized():
                return
            if finished:
                try:
                    if dist.get_backend() == "gloo":
                        dist.monitored_barrier(timeout=timedelta(minutes=1))
                    else:
                        self.barrier()
                except Exception as e:  # a peer that died or hangs: leave anyway
                    log.warning("ranks did not meet before leaving the process group: %s", e)
            dist.destroy_process_group()


def init_distributed(use_cuda: bool) -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a plain process gets a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    # Long timeout: ranks > 0 wait in a broadcast while rank 0 waits for groups (it sends an idle tick
    # every read_block_ms, so this only fires if rank 0 hangs).
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=timedelta(minutes=30))
    return DistContext(rank=rank, world=world, local_rank=local_rank)
