"""TrainEngine: the policy (and frozen reference), AdamW, and one optimizer step on a list of groups.

No Redis, no files beyond the model folder: the trainer loop (loop.py) feeds it groups and asks it for
full state dicts to checkpoint and publish. Under torchrun the policy is sharded with FSDP2
(`fully_shard` on every decoder layer, then the root); every rank holds the whole step's groups (rank 0
broadcasts them), trains its share of the sequences, and the loss is normalized by the whole step's
token count so that the sharded update equals the one-process update up to float summation order.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sgpo.core.types import Group
from sgpo.trainer.batch import Sample, build_samples, collate
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.distributed import DistContext
from sgpo.trainer.logprobs import compute_token_logprobs
from sgpo.trainer.loss import compute_policy_loss

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """What one optimizer step did; every rank gets the same (globally reduced) numbers."""

    loss: float
    kl: float
    clip_fraction: float
    ratio_mean: float
    entropy: float
    grad_norm: float
    lr: float
    seqs: int
    trained_seqs: int
    completion_tokens: int
    forwarded_tokens: int
    skipped_nonfinite: bool
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LogitsTap:
    """Calls the model and keeps its logits, so entropy comes from the same forward as the logprobs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.logits: Any = None

    def __call__(self, **kwargs: Any) -> Any:
        out = self.model(**kwargs)
        self.logits = out.logits
        return out


def _masked_entropy_sum(logits: Any, mask: Any, temperature: float) -> Any:
    """Sum over masked positions of the entropy (nats) of softmax(logits / T), one row at a time."""
    import torch

    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    with torch.no_grad():
        for row in range(logits.shape[0]):
            lf = logits[row, :-1].float() / temperature
            lse = torch.logsumexp(lf, dim=-1)
            h = lse - (torch.softmax(lf, dim=-1) * lf).sum(-1)
            total += (h * mask[row].float()).sum()
    return total


def _optim_to_fqn(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """torch's index-keyed optimizer state -> parameter-name keys (the format FSDP's full state dict uses)."""
    names = [n for n, _ in model.named_parameters()]
    return {
        "state": {names[i]: v for i, v in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def _optim_from_fqn(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    index = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    return {
        "state": {index[n]: v for n, v in state["state"].items()},
        "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]],
    }


class TrainEngine:
    def __init__(self, cfg: TrainerConfig, dist: DistContext | None = None) -> None:
        self.cfg = cfg
        self.dist = dist or DistContext()
        self.model: Any = None
        self.ref: Any = None
        self.optimizer: Any = None
        self.device: Any = None
        self.autocast_dtype: Any = None
        self.vocab_size = 0
        self.pad_id = 0
        self._aliases: set[str] = set()

    # ------------------------------------------------------------------ setup
    def load(self, weights_dir: Path) -> None:
        """Load the policy from `weights_dir` (the initial model or a checkpoint), the reference, AdamW."""
        import torch
        import transformers
        from transformers import AutoModelForCausalLM

        transformers.utils.logging.disable_progress_bar()
        cfg = self.cfg
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device = 'cuda' but torch sees no CUDA device; set device = 'cpu' or 'auto'")
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if use_cuda else "cpu")
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and use_cuda)
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        self.seed_everything(cfg.seed)

        model = AutoModelForCausalLM.from_pretrained(weights_dir, dtype=torch.float32)
        model.config.use_cache = False
        # Tied weights (lm_head = embeddings) appear twice in a state dict; the copy is dropped on save.
        unique = {n for n, _ in model.named_parameters()}
        self._aliases = {n for n, _ in model.named_parameters(remove_duplicate=False)} - unique
        gc_on = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and use_cuda)
        if gc_on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.to(self.device)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        pad = model.config.pad_token_id
        if pad is None:
            pad = model.config.eos_token_id
        self.pad_id = int(pad[0] if isinstance(pad, list) else pad or 0)
        if self.dist.enabled:
            self._shard(model)
        self.model = model
        if cfg.algo.kl_coef > 0:
            ref = AutoModelForCausalLM.from_pretrained(
                cfg.reference_path or cfg.require_model(), dtype=torch.float32
            )
            ref.config.use_cache = False
            ref.requires_grad_(False)
            ref.eval()
            ref.to(self.device)
            if self.dist.enabled:
                self._shard(ref)
            self.ref = ref
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=cfg.lr,
            betas=cfg.adam_betas,
            eps=cfg.adam_eps,
            weight_decay=cfg.weight_decay,
        )
        log.info(
            "model loaded",
            extra={
                "path": str(weights_dir),
                "device": str(self.device),
                "bf16_autocast": bf16,
                "gradient_checkpointing": gc_on,
                "params": sum(p.numel() for p in model.parameters()),
                "world": self.dist.world,
                "reference": self.ref is not None,
            },
        )

    @staticmethod
    def _shard(model: Any) -> None:
        from torch.distributed.fsdp import fully_shard

        layer_types = set(getattr(model, "_no_split_modules", None) or [])
        for module in model.modules():
            if type(module).__name__ in layer_types:
                fully_shard(module)
        fully_shard(model)

    @staticmethod
    def seed_everything(seed: int) -> None:
        import numpy as np
        import torch

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _autocast(self) -> Any:
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step `step` (0-based): linear warm-up, then constant."""
        w = self.cfg.lr_warmup_steps
        return self.cfg.lr * (min(1.0, (step + 1) / w) if w else 1.0)

    # ------------------------------------------------------------------ the step
    def train_step(self, groups: Sequence[Group], step: int) -> StepResult:
        """One optimizer step on `groups` (identical on every rank); `step` is its 0-based index."""
        import torch

        t0 = time.perf_counter()
        cfg, world = self.cfg, self.dist.world
        samples = build_samples(groups)
        total_tokens = float(sum(s.completion_len for s in samples))
        total_seqs = float(len(samples))
        skip = cfg.skip_zero_advantage and cfg.algo.kl_coef == 0.0
        active = [s for s in samples if not skip or s.advantage != 0.0]
        # Longest first (stable): less padding per micro-batch, and the same order on every rank.
        active.sort(key=lambda s: -len(s.input_ids))
        local = active[self.dist.rank :: world]
        mbs = cfg.micro_batch_size
        n_micro = math.ceil(math.ceil(len(active) / world) / mbs) if active else 0
        self.model.train()
        # tokens, seqs, pg, kl, clipped, ratio, entropy, loss, forwarded tokens
        sums = torch.zeros(9, dtype=torch.float64, device=self.device)
        for k in range(n_micro):
            chunk: list[Sample] = local[k * mbs : (k + 1) * mbs]
            weight = 1.0
            if not chunk:  # FSDP needs every rank in every forward: run one sequence with zero weight
                chunk, weight = [active[0]], 0.0
            mb = collate(chunk, self.pad_id, self.device)
            tap = _LogitsTap(self.model)
            with self._autocast():
                logp_new = compute_token_logprobs(tap, mb.input_ids, mb.attention_mask, cfg.temperature)
                logp_ref = None
                if self.ref is not None:
                    with torch.no_grad():
                        logp_ref = compute_token_logprobs(
                            self.ref, mb.input_ids, mb.attention_mask, cfg.temperature
                        )
            logp_old = mb.logp_old if cfg.logp_old == "behaviour" else logp_new.detach()
            loss, stats = compute_policy_loss(
                logp_new,
                logp_old,
                mb.advantages,
                mb.loss_mask,
                cfg.algo,
                logp_ref,
                total_tokens=total_tokens,
                total_seqs=total_seqs,
            )
            # Gradient reduction averages over ranks; the loss is already a share of the global sum.
            (loss * (weight * world)).backward()
            if weight:
                entropy = _masked_entropy_sum(tap.logits, mb.loss_mask, cfg.temperature)
                sums[:6] += stats.as_tensor().to(sums.dtype)
                sums[6] += entropy.to(sums.dtype)
                sums[7] += loss.detach().to(sums.dtype)
                sums[8] += mb.tokens
            del tap, logp_new, loss
        self.dist.all_reduce_sum(sums)
        for p in self.model.parameters():  # nothing trained (all advantages 0): Adam still takes its step
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.model.parameters()), max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        grad_norm_f = float(grad_norm)
        lr = self.lr_at(step)
        finite = math.isfinite(grad_norm_f)
        if finite:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            self.optimizer.step()
        else:
            log.error(
                "non-finite gradient norm: step skipped", extra={"step": step, "grad_norm": grad_norm_f}
            )
        self.optimizer.zero_grad(set_to_none=True)
        tokens = float(sums[0])
        per_token = tokens if tokens > 0 else 1.0
        return StepResult(
            loss=float(sums[7]),
            kl=float(sums[3]) / per_token,
            clip_fraction=float(sums[4]) / per_token,
            ratio_mean=float(sums[5]) / per_token if tokens > 0 else 1.0,
            entropy=float(sums[6]) / per_token,
            grad_norm=grad_norm_f,
            lr=lr,
            seqs=int(total_seqs),
            trained_seqs=len(active),
            completion_tokens=int(total_tokens),
            forwarded_tokens=int(sums[8]),
            skipped_nonfinite=not finite,
            seconds=time.perf_counter() - t0,
        )

    # ------------------------------------------------------------------ state
    def gather_state(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Full model and optimizer state dicts (parameter-name keys) on rank 0, None elsewhere. Collective."""
        if not self.dist.enabled:
            model_sd = {k: v.detach() for k, v in self.model.state_dict().items() if k not in self._aliases}
            return model_sd, _optim_to_fqn(self.model, self.optimizer.state_dict())
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(self.model, options=opts)
        optim_sd = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        if not self.dist.is_main:
            return None, None
        return {k: v for k, v in model_sd.items() if k not in self._aliases}, optim_sd

    def save_model(self, model_sd: dict[str, Any], out_dir: Path) -> None:
        """Write an HF model folder (config + safetensors) from a full state dict (rank 0)."""
        self.model.save_pretrained(out_dir, state_dict=model_sd, safe_serialization=True)

    def load_optimizer(self, optim_sd: dict[str, Any] | None) -> None:
        """Restore AdamW from a parameter-name-keyed full state dict (rank 0's is broadcast). Collective."""
        if not self.dist.enabled:
            assert optim_sd is not None
            self.optimizer.load_state_dict(_optim_from_fqn(self.model, optim_sd))
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(
            self.model,
            self.optimizer,
            optim_sd if self.dist.is_main else {},
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
