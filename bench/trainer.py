"""Trainer step against a plain transformers loop and against the trainer as it was (commit 47efbde): tokens/s
and peak memory, all in one process, interleaved, ratios printed.

    python bench/trainer.py                                       # tiny policy (random weights), CPU
    python bench/trainer.py --shape vocab152k --seq-len 4096 --seqs 2 --micro 1 --repeats 2
    python bench/trainer.py --shape qwen2.5-1.5b --device cuda --seq-len 1024 --seqs 64 --micro 4

Four sides train the same model on the same synthetic groups with the same micro-batch size:
- ours: `TrainEngine.train_step` as configured (`--max-tokens`, `--pack`, `--chunk`, `--compile`): the fused output layer
  (each logits chunk turned into its gradients in the forward pass; `fused_output_layer`);
- unfused: the same with `fused_output_layer = false` (chunked logprobs, backward recomputes the logits;
  `--no-unfused` skips it);
  both compute logprobs at completion positions only, the docs/design.md §1 loss, entropy, grad-norm
  clip, AdamW;
- before: the engine of commit 47efbde (read from git, its logprob import pointed at the preserved
  full-logits path `compute_token_logprobs_full`): full [batch, length, vocab] logits;
- plain: `model(input_ids, labels=...)` + backward + clip + AdamW over micro-batches of `--micro` sequences
  in data order, each padded to its longest (what a plain loop does).
Every completion has a non-zero advantage (nothing is skipped). `--lengths varied` draws completion lengths
uniformly in [seq_len/8, seq_len - prompt] (RL completions vary; padding costs the plain loop), `equal`
gives every sequence `--seq-len` tokens (no padding anywhere: compute against compute).
tokens/s = real sequence tokens (prompt + completion) per second of optimizer step, the same count for every
side. Peak memory: on CPU the step's resident high-water mark above the resident set before it (weights and
AdamW state are resident for every side alike, printed once); on CUDA torch's max allocated. bf16 autocast
and gradient checkpointing on CUDA. On CUDA, MFU = 6 * params * tokens/s / peak bf16.

Machine, load and date are printed: on a shared CPU the figures are noisy; compare ratios, not absolutes. On
a CPU each side's rate is also printed per second of this thread's CPU time (`time.thread_time`): with
`--threads 1` that is the work a side does, nearly independent of other processes taking turns on the cores
(they still share caches and memory bandwidth), so on a loaded machine the cpu-time ratio is the steadier one.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "47efbde"
QWEN = dict(max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True, vocab_size=151936)
SHAPES: dict[str, dict[str, Any]] = {
    # small hidden size, the real Qwen2.5 vocabulary: the output layer dominates memory
    "vocab152k": dict(
        QWEN,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "qwen2.5-0.5b": dict(
        QWEN,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
    ),
    "qwen2.5-1.5b": dict(
        QWEN,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
    ),
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def build_policy(shape: str, root: Path) -> Path:
    if shape == "tiny":
        from sgpo.tasks.tiny import build_tiny_policy

        return build_tiny_policy(root / "tiny", seed=0)
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2))
    out = root / shape
    model.save_pretrained(out, safe_serialization=True)
    return out


def before_engine_class() -> Any:
    """TrainEngine as of BEFORE_COMMIT, loaded from git into a module of its own."""
    src = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:services/sgpo/trainer/engine.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    src = src.replace(
        "from sgpo.trainer.logprobs import compute_token_logprobs",
        "from sgpo.trainer.logprobs import compute_token_logprobs_full as compute_token_logprobs",
    )
    module = types.ModuleType("sgpo_trainer_engine_before")
    sys.modules[module.__name__] = module
    exec(compile(src, f"{BEFORE_COMMIT}:engine.py", "exec"), module.__dict__)
    return module.TrainEngine


def make_groups(n_seqs: int, group_size: int, seq_len: int, vocab: int, lengths: str, seed: int) -> list[Any]:
    from sgpo.core import Completion, Group, Verdict

    rng = random.Random(seed)
    prompt_len = max(seq_len // 8, 1)
    longest = seq_len - prompt_len
    groups = []
    for gi in range(n_seqs // group_size):
        comps = []
        for _ in range(group_size):
            n = longest if lengths == "equal" else rng.randint(max(seq_len // 8, 1), longest)
            comps.append(
                Completion(
                    text="",
                    token_ids=tuple(rng.randrange(3, vocab) for _ in range(n)),
                    logprobs=tuple(-rng.uniform(0.5, 8.0) for _ in range(n)),
                )
            )
        groups.append(
            Group(
                group_id=f"b{gi}",
                problem="",
                prompt_text="",
                prompt_token_ids=tuple(rng.randrange(3, vocab) for _ in range(prompt_len)),
                answer="",
                completions=tuple(comps),
                verdicts=tuple(Verdict("wrong") for _ in comps),
                rewards=(0.0,) * group_size,
                advantages=tuple(rng.choice((-1.0, 1.0)) for _ in comps),
                kind="mixed",
            )
        )
    return groups


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def measured(fn: Any, device: Any) -> tuple[float, float, int]:
    """(wall seconds, this thread's CPU seconds, peak bytes above the start) of fn().

    With `--threads 1` on a CPU every kernel runs on the calling thread, so its CPU seconds are the work done,
    nearly free of what other processes do to the wall clock on a shared machine (cache and memory bandwidth
    still are shared); on CUDA the CPU seconds mean nothing and the wall clock is the figure."""
    import torch

    from sgpo.trainer.memory import peak_rss_above

    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        return dt, dt, torch.cuda.max_memory_allocated() - start
    t0, c0 = time.perf_counter(), time.thread_time()
    _, peak = peak_rss_above(fn)
    return time.perf_counter() - t0, time.thread_time() - c0, peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["tiny", *SHAPES], default="tiny")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seq-len", type=int, default=128, help="longest prompt + completion tokens")
    p.add_argument("--lengths", choices=["varied", "equal"], default="varied")
    p.add_argument("--seqs", type=int, default=64, help="sequences per optimizer step")
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--micro", type=int, default=16, help="sequences per micro-batch (all three sides)")
    p.add_argument("--max-tokens", type=int, default=0, help="ours: max_tokens_per_micro_batch (0: --micro)")
    p.add_argument("--pack", action="store_true", help="ours: pack_sequences")
    p.add_argument("--chunk", type=int, default=0, help="ours: logprob_chunk_tokens (0: default)")
    p.add_argument(
        "--compile", action="store_true", help="ours: compile = true (compiled in the warm-up step)"
    )
    p.add_argument("--no-before", action="store_true", help="skip the 47efbde engine (its memory is large)")
    p.add_argument(
        "--no-unfused",
        action="store_true",
        help="skip ours with fused_output_layer = false (logits recomputed)",
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.seqs % args.group_size:
        p.error(f"--seqs ({args.seqs}) must be a multiple of --group-size ({args.group_size})")

    import torch
    from transformers import AutoModelForCausalLM

    from sgpo.trainer.batch import build_samples, collate
    from sgpo.trainer.config import TrainerConfig
    from sgpo.trainer.engine import TrainEngine
    from sgpo.trainer.memory import _status_bytes

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    print(f"date {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}  host {platform.node()}")
    print(
        f"machine {platform.machine()} cpus {os.cpu_count()} torch {torch.__version__} "
        f"threads {torch.get_num_threads()} device {device}"
        + (f" {torch.cuda.get_device_name()}" if cuda else "")
    )
    print(f"load average before {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_policy(args.shape, Path(tmp))
        base = _status_bytes("VmRSS") if not cuda else 0

        def config(**kw: Any) -> TrainerConfig:
            return TrainerConfig(
                model_path=path,
                micro_batch_size=args.micro,
                max_seq_len=args.seq_len,
                lr=1e-6,
                device=args.device,
                **kw,
            )

        ours = TrainEngine(
            config(
                max_tokens_per_micro_batch=args.max_tokens,
                pack_sequences=args.pack,
                logprob_chunk_tokens=args.chunk,
                compile=args.compile,
            )
        )
        ours.load(path)
        unfused = None
        if not args.no_unfused:
            unfused = TrainEngine(
                config(
                    max_tokens_per_micro_batch=args.max_tokens,
                    pack_sequences=args.pack,
                    logprob_chunk_tokens=args.chunk,
                    fused_output_layer=False,
                )
            )
            unfused.load(path)
        n_params = sum(x.numel() for x in ours.model.parameters())
        before = None
        if not args.no_before:
            before = before_engine_class()(config())
            before.load(path)
        plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        plain.config.use_cache = False
        if cuda:
            plain.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        plain.train()
        opt = torch.optim.AdamW(plain.parameters(), lr=1e-6)

        groups = make_groups(args.seqs, args.group_size, args.seq_len, ours.vocab_size, args.lengths, seed=0)
        samples = build_samples(groups)
        tokens = sum(len(s.input_ids) for s in samples)
        completion = sum(s.completion_len for s in samples)
        batches = [
            collate(samples[i : i + args.micro], ours.pad_id, device)
            for i in range(0, len(samples), args.micro)
        ]
        padded = sum(mb.input_ids.numel() for mb in batches)
        print(
            f"shape {args.shape} params {n_params / 1e6:.2f}M vocab {ours.vocab_size} longest {args.seq_len} "
            f"lengths {args.lengths} seqs/step {args.seqs} micro {args.micro} tokens/step {tokens} "
            f"(completion {completion}; plain loop pads to {padded}) ours: max_tokens {args.max_tokens} "
            f"pack {args.pack} chunk {args.chunk} compile {args.compile} bf16 {ours.autocast_dtype is not None}"
        )

        def autocast() -> Any:
            if ours.autocast_dtype is None:
                return contextlib.nullcontext()
            return torch.autocast(device_type=device.type, dtype=ours.autocast_dtype)

        def plain_step() -> None:
            for mb in batches:
                with autocast():
                    out = plain(
                        input_ids=mb.input_ids,
                        attention_mask=mb.attention_mask,
                        labels=mb.input_ids,
                        use_cache=False,
                    )
                (out.loss / len(batches)).backward()
                del out
            torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        sides: dict[str, Any] = {
            "ours": lambda s: ours.train_step(groups, s),
            "plain": lambda s: plain_step(),
        }
        if unfused is not None:
            sides["unfused"] = lambda s: unfused.train_step(groups, s)
        if before is not None:
            sides["before"] = lambda s: before.train_step(groups, s)
        for fn in sides.values():  # warm-up: allocator, kernels, AdamW state
            fn(0)
        if not cuda:
            print(
                f"resident after loading all sides and one step each: {(_status_bytes('VmRSS') - base) / 2**20:,.0f} MiB"
            )
        rates: dict[str, list[float]] = {k: [] for k in sides}
        cpu_rates: dict[str, list[float]] = {k: [] for k in sides}
        peaks: dict[str, list[int]] = {k: [] for k in sides}
        for r in range(args.repeats):
            cells = []
            for name, fn in sides.items():
                dt, cpu, peak = measured(lambda fn=fn, r=r: fn(r + 1), device)
                rates[name].append(tokens / dt)
                cpu_rates[name].append(tokens / cpu)
                peaks[name].append(peak)
                cells.append(
                    f"{name} {dt:.3f}s {tokens / dt:,.0f} tok/s"
                    + ("" if cuda else f" (cpu {cpu:.3f}s {tokens / cpu:,.0f} tok/s)")
                    + f" peak +{peak / 2**20:,.0f} MiB"
                )
            print(f"repeat {r}: " + " | ".join(cells) + f" | load {os.getloadavg()[0]:.1f}")
        peak = {k: max(v) for k, v in peaks.items()}
        kinds = [("wall", rates)] + ([] if cuda else [("cpu-time", cpu_rates)])
        if not cuda and torch.get_num_threads() != 1:
            print(
                "note: cpu-time rates count every torch thread's work only with --threads 1; read the wall ones"
            )
        for kind, table in kinds:
            med = {k: statistics.median(v) for k, v in table.items()}
            print(f"median tokens/s ({kind}): " + ", ".join(f"{k} {v:,.0f}" for k, v in med.items()))
            print(
                f"RATIO tokens/s ({kind}) ours/plain {med['ours'] / med['plain']:.2f}"
                + (f", ours/unfused {med['ours'] / med['unfused']:.2f}" if "unfused" in med else "")
                + (f", ours/before {med['ours'] / med['before']:.2f}" if "before" in med else "")
            )
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            "peak step memory above resident (MiB): "
            + ", ".join(f"{k} {v / 2**20:,.0f}" for k, v in peak.items())
        )
        print(
            f"RATIO peak memory ours/plain {peak['ours'] / max(peak['plain'], 1):.3f}"
            + (f", ours/before {peak['ours'] / max(peak['before'], 1):.3f}" if "before" in peak else "")
        )
        if cuda:
            name = torch.cuda.get_device_name()
            tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), math.nan)
            for label, rate in med.items():
                print(
                    f"MFU {label}: {6 * n_params * rate / (tflops * 1e12):.1%} (peak {tflops} TFLOPS bf16 dense)"
                )
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
