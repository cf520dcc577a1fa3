"""Training-step throughput of the trainer's engine against a plain transformers loop, same model, same run.

    python bench/trainer.py                                   # tiny policy on CPU (random weights)
    python bench/trainer.py --shape qwen2.5-0.5b --device cuda --seq-len 1024 --seqs 64 --micro 8
    python bench/trainer.py --shape qwen2.5-1.5b --device cuda --seq-len 1024 --seqs 64 --micro 4

Ours: `TrainEngine.train_step` on synthetic groups (every completion has a non-zero advantage, so nothing is
skipped): teacher-forced logprobs, the DESIGN.md §1 loss, entropy, grad-norm clip, AdamW; bf16 autocast and
gradient checkpointing on CUDA. Baseline: `model(input_ids, labels=...)` + backward + AdamW over the same
micro-batches of the same sequences (bf16 autocast on CUDA, gradient checkpointing as ours). tokens/s =
sequence tokens (prompt + completion) per second of optimizer step. The two sides alternate each repeat; the
medians are printed with their ratio, plus the share of time zero-advantage skipping saves when half of the
groups are zero-std (an all-negative group under GRPO). On CUDA, MFU = 6 * params * tokens/s / peak bf16.

Machine, load and date are printed: on a shared CPU the figures are noisy; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),
    "qwen2.5-1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def build_policy(shape: str, root: Path) -> Path:
    from sgpo.tasks.tiny import build_tiny_policy

    if shape == "tiny":
        return build_tiny_policy(root / "tiny", seed=0)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2))
    out = root / shape
    model.save_pretrained(out, safe_serialization=True)
    return out


def make_groups(
    n_seqs: int, group_size: int, seq_len: int, vocab: int, zero_frac: float, seed: int
) -> list[Any]:
    from sgpo.core import Completion, Group, Verdict

    rng = random.Random(seed)
    prompt_len = max(seq_len // 8, 1)
    completion_len = seq_len - prompt_len
    groups = []
    for gi in range(n_seqs // group_size):
        zero = gi < round(zero_frac * (n_seqs // group_size))
        advs = tuple(0.0 if zero else rng.choice((-1.0, 1.0)) for _ in range(group_size))
        comps = tuple(
            Completion(
                text="",
                token_ids=tuple(rng.randrange(3, vocab) for _ in range(completion_len)),
                logprobs=tuple(-rng.uniform(0.5, 8.0) for _ in range(completion_len)),
            )
            for _ in range(group_size)
        )
        groups.append(
            Group(
                group_id=f"b{gi}",
                problem="",
                prompt_text="",
                prompt_token_ids=tuple(rng.randrange(3, vocab) for _ in range(prompt_len)),
                answer="",
                completions=comps,
                verdicts=tuple(Verdict("wrong") for _ in comps),
                rewards=(0.0,) * group_size,
                advantages=advs,
                kind="all_negative" if zero else "mixed",
            )
        )
    return groups


def plain_step(model: Any, opt: Any, batches: list[Any], autocast: Any, max_norm: float) -> float:
    """The baseline: HF causal-LM loss, backward, clip, AdamW. Returns seconds."""
    import torch

    sync(model)
    t0 = time.perf_counter()
    for input_ids, attention in batches:
        with autocast():
            out = model(input_ids=input_ids, attention_mask=attention, labels=input_ids, use_cache=False)
        (out.loss / len(batches)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(model)
    return time.perf_counter() - t0


def sync(model: Any) -> None:
    import torch

    if next(model.parameters()).is_cuda:
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["tiny", *SHAPES], default="tiny")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seq-len", type=int, default=128, help="prompt + completion tokens per sequence")
    p.add_argument("--seqs", type=int, default=64, help="sequences per optimizer step")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--micro", type=int, default=16, help="sequences per micro-batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.seqs % args.group_size:
        p.error(f"--seqs ({args.seqs}) must be a multiple of --group-size ({args.group_size})")

    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    from sgpo.trainer.batch import build_samples, collate
    from sgpo.trainer.config import TrainerConfig
    from sgpo.trainer.engine import TrainEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}  host {platform.node()}")
    print(
        f"machine {platform.machine()} {platform.processor() or ''} cpus {os.cpu_count()} torch {torch.__version__} "
        f"threads {torch.get_num_threads()} device {device}"
    )
    if cuda:
        print(f"gpu {torch.cuda.get_device_name()}")
    print(f"load average before {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_policy(args.shape, Path(tmp))
        cfg = TrainerConfig(
            model_path=path,
            micro_batch_size=args.micro,
            max_seq_len=args.seq_len,
            lr=1e-6,
            device=args.device,
        )
        engine = TrainEngine(cfg)
        engine.load(path)
        n_params = sum(x.numel() for x in engine.model.parameters())
        groups = make_groups(args.seqs, args.group_size, args.seq_len, engine.vocab_size, 0.0, seed=0)
        half_zero = make_groups(args.seqs, args.group_size, args.seq_len, engine.vocab_size, 0.5, seed=1)
        tokens = args.seqs * args.seq_len
        print(
            f"shape {args.shape} params {n_params / 1e6:.2f}M seq_len {args.seq_len} seqs/step {args.seqs} "
            f"micro {args.micro} tokens/step {tokens} bf16 {engine.autocast_dtype is not None}"
        )

        plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        plain.config.use_cache = False
        if cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and cuda):
            plain.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        plain.train()
        opt = torch.optim.AdamW(plain.parameters(), lr=1e-6)
        samples = build_samples(groups)
        batches = []
        for i in range(0, len(samples), args.micro):
            mb = collate(samples[i : i + args.micro], engine.pad_id, device)
            batches.append((mb.input_ids, mb.attention_mask))

        def autocast() -> Any:
            if engine.autocast_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=device.type, dtype=engine.autocast_dtype)

        # Warm-up both (allocator, kernels), then alternate.
        engine.train_step(groups, 0)
        plain_step(plain, opt, batches, autocast, 1.0)
        ours, base, skipped = [], [], []
        for r in range(args.repeats):
            res = engine.train_step(groups, r + 1)
            assert res.forwarded_tokens == tokens
            dt_plain = plain_step(plain, opt, batches, autocast, 1.0)
            res_half = engine.train_step(half_zero, r + 1)
            ours.append(tokens / res.seconds)
            base.append(tokens / dt_plain)
            skipped.append(res_half.seconds / res.seconds)
            print(
                f"repeat {r}: ours {res.seconds:.3f}s = {tokens / res.seconds:,.0f} tok/s | plain loop "
                f"{dt_plain:.3f}s = {tokens / dt_plain:,.0f} tok/s | half zero-std groups {res_half.seconds:.3f}s"
            )
        mo, mb_ = statistics.median(ours), statistics.median(base)
        print(f"median tokens/s: ours {mo:,.0f}, plain loop {mb_:,.0f}, ratio ours/plain {mo / mb_:.2f}")
        print(
            f"with half the groups zero-std, a step takes {statistics.median(skipped):.2f}x the time of a full one "
            "(their forward/backward is skipped; the update is identical)"
        )
        if cuda:
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), math.nan)
            for label, rate in (("ours", mo), ("plain", mb_)):
                print(
                    f"MFU {label}: {6 * n_params * rate / (peak * 1e12):.1%} (peak {peak} TFLOPS bf16 dense)"
                )
            print(f"peak cuda memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
