"""TrainEngine: the policy (and frozen reference), AdamW, and one optimizer step on a list of groups.

No Redis, no files beyond the model folder: the trainer loop (loop.py) feeds it groups and asks it for
full state dicts to checkpoint and publish. Under torchrun the policy is built on the meta device and
sharded with FSDP2 (`fully_shard` on every decoder layer, then the root; bf16 through a mixed-precision
policy), then filled from rank 0's copy of the weights; every rank holds the whole step's groups (rank 0
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from sgpo.core.types import Group
from sgpo.trainer.batch import MicroBatch, Sample, build_samples, collate, collate_packed, plan_micro_batches
from sgpo.trainer.config import TrainerConfig
from sgpo.trainer.distributed import DistContext
from sgpo.trainer.logprobs import compute_token_logprobs, compute_token_loss_fused
from sgpo.trainer.loss import LossStats, compute_policy_loss, per_token_loss, token_coefficients

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


@dataclass
class _StepSums:
    """Per-step sums over this rank's micro-batches (0-d float64 tensors), all-reduced once at the end."""

    tokens: Any
    seqs: Any
    pg_sum: Any
    kl_sum: Any
    clipped: Any
    ratio_sum: Any
    entropy_sum: Any
    loss: Any
    forwarded_tokens: Any

    @classmethod
    def zeros(cls, device: Any) -> _StepSums:
        import torch

        return cls(*(torch.zeros((), dtype=torch.float64, device=device) for _ in fields(cls)))

    def add(self, stats: LossStats, entropy_sum: Any, loss: Any, forwarded_tokens: int) -> None:
        for f in fields(stats):  # LossStats' sums, under the same names here
            getattr(self, f.name).add_(getattr(stats, f.name).detach().to(self.tokens.dtype))
        self.entropy_sum.add_(entropy_sum.detach().to(self.tokens.dtype))
        self.loss.add_(loss.detach().to(self.tokens.dtype))
        self.forwarded_tokens.add_(forwarded_tokens)

    def all_reduced(self, dist: DistContext) -> dict[str, float]:
        """Every field summed over ranks, as floats (one collective)."""
        import torch

        names = [f.name for f in fields(self)]
        flat = dist.all_reduce_sum(torch.stack([getattr(self, n) for n in names]))
        return {n: float(v) for n, v in zip(names, flat.tolist(), strict=True)}


def _decoder_layers(model: Any) -> list[Any]:
    """The model's repeated blocks: the module types transformers names in `_no_split_modules`."""
    layer_types = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in layer_types]


@contextlib.contextmanager
def _parameters_on_meta() -> Any:
    """Modules built inside get their parameters on the meta device (no memory); buffers stay real."""
    import torch

    register = torch.nn.Module.register_parameter

    def on_meta(module: Any, name: str, param: Any) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            p = module._parameters[name]
            module._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


def _tied_names(model: Any) -> list[tuple[str, str]]:
    """(alias, name) of each parameter reachable under a second name (tied embeddings)."""
    first: dict[int, str] = {}
    out = []
    for n, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out.append((n, first[id(p)]))
        else:
            first[id(p)] = n
    return out


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

        gc_on = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and use_cuda)
        model = self._build(weights_dir, gc_on)
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        pad = model.config.pad_token_id
        if pad is None:
            pad = model.config.eos_token_id
        self.pad_id = int(pad[0] if isinstance(pad, list) else pad or 0)
        self.model = model
        if cfg.algo.kl_coef > 0:
            ref = self._build(cfg.reference_path or cfg.require_model(), False, frozen=True)
            ref.eval()
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
                "fsdp_mixed_precision": bool(bf16 and self.dist.enabled),
                "gradient_checkpointing": gc_on,
                "params": sum(p.numel() for p in model.parameters()),
                "world": self.dist.world,
                "reference": self.ref is not None,
            },
        )

    def _build(self, path: Path, gc_on: bool, frozen: bool = False) -> Any:
        """The fp32 model of `path` on self.device: loaded whole in one process; under torchrun built with
        its parameters on the meta device, sharded, then filled from rank 0's CPU copy of the weights (each
        rank receives only its shards: no device ever holds the full model)."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        if not self.dist.enabled:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        else:
            with _parameters_on_meta():
                model = AutoModelForCausalLM.from_config(
                    AutoConfig.from_pretrained(path), dtype=torch.float32
                )
        model.config.use_cache = False
        # Tied weights (lm_head = embeddings) appear twice in a state dict; the copy is dropped on save.
        if frozen:
            model.requires_grad_(False)
        else:
            self._aliases = {alias for alias, _ in _tied_names(model)}
        if gc_on:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if not self.dist.enabled:
            return self._compile(model.to(self.device))
        self._shard(model)
        buffers = {n: b.clone() for n, b in model.named_buffers()}  # real: only parameters were on meta
        model.to_empty(device=self.device)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
        self._load_sharded(model, path)
        return self._compile(model)

    def _compile(self, model: Any) -> Any:
        """`compile = true`: each decoder layer compiled in place (the root and the output layer stay eager)."""
        if self.cfg.compile:
            for module in _decoder_layers(model):
                module.compile(dynamic=True)
        return model

    def _load_sharded(self, model: Any, path: Path) -> None:
        """Rank 0 reads the safetensors into CPU memory; set_model_state_dict sends each rank its shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full: dict[str, Any] = {}
        if self.dist.is_main:
            from safetensors.torch import load_file

            files = sorted(Path(path).glob("*.safetensors"))
            if not files:
                raise ValueError(
                    f"{path} has no *.safetensors weights; save the model with safe_serialization"
                )
            for f in files:
                full.update(load_file(f, device="cpu"))
            full = {k: v.float() if v.is_floating_point() else v for k, v in full.items()}
            tied = dict(_tied_names(model))
            for alias, name in tied.items():
                if alias not in full and name in full:
                    full[alias] = full[name]
        set_model_state_dict(
            model,
            full,
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False),
        )

    def _shard(self, model: Any) -> None:
        """fully_shard each decoder layer, then the root; bf16: gather bf16 parameters, reduce in fp32."""
        import torch
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        kw: dict[str, Any] = {}
        if self.autocast_dtype is not None:
            kw["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=self.autocast_dtype, reduce_dtype=torch.float32
            )
        for module in _decoder_layers(model):
            fully_shard(module, **kw)
        fully_shard(model, **kw)

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
        plans = plan_micro_batches(
            active, world, cfg.micro_batch_size, cfg.max_tokens_per_micro_batch, cfg.pack_sequences
        )
        mine = plans[self.dist.rank]
        n_micro = max(len(p) for p in plans)
        self.model.train()
        sums = _StepSums.zeros(self.device)
        for k in range(n_micro):
            weight = 1.0
            chunk: list[Sample] = mine[k] if k < len(mine) else []
            if not chunk:  # FSDP needs every rank in every forward: run one sequence with zero weight
                chunk, weight = [active[-1]], 0.0
            mb = self._collate(chunk)
            with self._autocast():
                logp_ref = None
                if self.ref is not None:
                    with torch.no_grad():
                        logp_ref = mb.per_sequence(self._logprobs(self.ref, mb))
                fused = (
                    self._fused_loss(mb, logp_ref, total_tokens, total_seqs)
                    if cfg.fused_output_layer
                    else None
                )
                if fused is None:
                    logp_rows, entropy_rows = self._logprobs(self.model, mb, with_entropy=True)
                    logp_new = mb.per_sequence(logp_rows)
                    entropy_sum = entropy_rows.sum()
                else:
                    loss, logp_new, entropy_sum = fused
            logp_old = mb.logp_old if cfg.logp_old == "behaviour" else logp_new.detach()
            with contextlib.nullcontext() if fused is None else torch.no_grad():
                # the fused path has its loss (and gradient) already: this gives the same statistics
                loss_here, stats = compute_policy_loss(
                    logp_new,
                    logp_old,
                    mb.advantages,
                    mb.loss_mask,
                    cfg.algo,
                    logp_ref,
                    total_tokens=total_tokens,
                    total_seqs=total_seqs,
                )
            if fused is None:
                loss = loss_here
            # Gradient reduction averages over ranks; the loss is already a share of the global sum.
            (loss * (weight * world)).backward()
            if weight:
                sums.add(stats, entropy_sum, loss, mb.tokens)
            del logp_new, loss, loss_here, fused
        totals = sums.all_reduced(self.dist)
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
        tokens = totals["tokens"]
        per_token = tokens if tokens > 0 else 1.0
        return StepResult(
            loss=totals["loss"],
            kl=totals["kl_sum"] / per_token,
            clip_fraction=totals["clipped"] / per_token,
            ratio_mean=totals["ratio_sum"] / per_token if tokens > 0 else 1.0,
            entropy=totals["entropy_sum"] / per_token,
            grad_norm=grad_norm_f,
            lr=lr,
            seqs=int(total_seqs),
            trained_seqs=len(active),
            completion_tokens=int(total_tokens),
            forwarded_tokens=int(totals["forwarded_tokens"]),
            skipped_nonfinite=not finite,
            seconds=time.perf_counter() - t0,
        )

    def _collate(self, samples: list[Sample]) -> MicroBatch:
        if self.cfg.pack_sequences:
            return collate_packed(samples, self.pad_id, self.device)
        return collate(samples, self.pad_id, self.device)

    def _fused_loss(
        self, mb: MicroBatch, logp_ref: Any, total_tokens: float, total_seqs: float
    ) -> tuple[Any, Any, Any] | None:
        """(loss, logp_new [B, L-1] detached, entropy sum) through the fused output layer, or None where
        the model's output layer is not a plain linear map. The loss is loss.per_token_loss x
        loss.token_coefficients, term by term, at mb's loss positions in the chunks' order (mb.flat)."""
        cfg = self.cfg
        coef = mb.flat(token_coefficients(mb.loss_mask, cfg.algo, total_tokens, total_seqs))
        adv = mb.flat(mb.advantages.unsqueeze(-1))
        old = mb.flat(mb.logp_old) if cfg.logp_old == "behaviour" else None
        ref = mb.flat(logp_ref) if logp_ref is not None else None

        def token_loss(lp: Any, s: int, e: int) -> Any:
            lp_old = old[s:e] if old is not None else lp.detach()
            lp_ref = ref[s:e] if ref is not None else None
            per_token = per_token_loss(lp, lp_old, adv[s:e], cfg.algo, lp_ref)[0]
            return (per_token * coef[s:e]).sum()

        out = compute_token_loss_fused(
            self.model,
            mb.input_ids,
            token_loss,
            cfg.temperature,
            position_ids=self._position_ids(mb),
            mask=mb.logprob_mask,
            chunk_tokens=cfg.logprob_chunk_tokens,
            with_entropy=True,
        )
        if out is None:
            return None
        loss, logp, entropy = out
        return loss, mb.unflat(logp), entropy.sum()

    def _position_ids(self, mb: MicroBatch) -> Any:
        import torch

        if mb.position_ids is not None:
            return mb.position_ids
        # right padding: real tokens sit at 0..n-1; padding continues the count
        rows, length = mb.input_ids.shape
        return torch.arange(length, device=mb.input_ids.device).expand(rows, length)

    def _logprobs(self, model: Any, mb: MicroBatch, with_entropy: bool = False) -> Any:
        """Logprobs [R, T-1] (and entropies) of mb's rows, computed only where the loss needs them.

        Rows are right-padded (collate) or packed, so no attention mask is passed: under causal attention a
        real token never sees the padding after it, and without a mask sdpa takes its causal kernel instead
        of materialising a [T, T] mask and score matrix per head (packed rows get theirs from the position
        ids, which restart per sequence). Padding positions compute values that no loss position reads."""
        return compute_token_logprobs(
            model,
            mb.input_ids,
            None,
            self.cfg.temperature,
            position_ids=self._position_ids(mb),
            mask=mb.logprob_mask,
            chunk_tokens=self.cfg.logprob_chunk_tokens,
            with_entropy=with_entropy,
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

    def publishable(self, model_sd: dict[str, Any], copy: bool = False) -> dict[str, Any]:
        """The state dict to publish: floating tensors in `publish_dtype`, on the CPU; with `copy`, never the
        live parameters (a background publish must not see the next step's in-place updates)."""
        import torch

        dtype = torch.bfloat16 if self.cfg.publish_dtype == "bf16" else None
        out = {}
        for k, v in model_sd.items():
            t = v.detach()
            if dtype is not None and t.is_floating_point():
                t = t.to(device="cpu", dtype=dtype)
            elif copy or t.device.type != "cpu":
                t = t.to("cpu", copy=True)
            out[k] = t
        return out

    def save_model(self, model_sd: dict[str, Any], out_dir: Path) -> None:
        """Write an HF model folder (config.json, generation_config.json, model.safetensors) from a full state
        dict (rank 0). config.json names the dtype the weights are stored in, so `dtype="auto"` loaders (vLLM,
        transformers) keep it. Written directly: transformers' save_pretrained on an FSDP-wrapped model
        consults the model's own (sharded) parameters."""
        import copy

        import torch
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.model.config)
        dtypes = {v.dtype for v in model_sd.values() if v.is_floating_point()}
        config.dtype = str(dtypes.pop() if len(dtypes) == 1 else torch.float32).removeprefix("torch.")
        config.architectures = [type(self.model).__name__.removeprefix("FSDP")]
        config.save_pretrained(out_dir)
        generation = getattr(self.model, "generation_config", None)
        if generation is not None:
            generation.save_pretrained(out_dir)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_sd.items()}
        save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

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
