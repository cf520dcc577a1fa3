"""Throughput of the `hf` and `vllm` engines and a plain `model.generate` loop on the same model, in one run.

    python bench/generator.py                       # tiny policy (pretrained if cached, else random), batch 64
    ~/.cache/sgpo/vllm-venv/bin/python bench/generator.py   # the same, plus the vllm engine (scripts/vllm-env.sh)
    python bench/generator.py --policy random       # random weights (lengths set by max_tokens / random EOS)
    python bench/generator.py --shape qwen2.5-0.5b --device cuda --batch 256   # GPU: Qwen2.5-0.5B-shaped, random

Both sides sample (temperature 1) the same prompts with the same token budget; tokens/s counts each side's
own useful tokens (up to and including EOS), so finished rows that `generate` keeps padding cost it time
but add no tokens. The vllm engine (when vLLM is installed, or --vllm) runs after the other two, in the same
process and batch (its engine core in a process of its own, as served); its start-up is printed apart.
Prints the machine, date, load, tokens/s of each, the ratios, and memory.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

QWEN25_05B = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    vocab_size=151936,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    tie_word_embeddings=True,
)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_policy(args: argparse.Namespace, root: Path) -> Path:
    from sgpo.tasks.tiny import build_tiny_policy, policy_dir

    if args.shape == "qwen2.5-0.5b":
        import torch
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        tiny = build_tiny_policy(root / "tok")
        tok = AutoTokenizer.from_pretrained(tiny)
        cfg = Qwen2Config(**QWEN25_05B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        cfg.pad_token_id = tok.pad_token_id
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
        out = root / "qwen"
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)  # char tokenizer: ids past its vocab decode to nothing
        return out
    cached = policy_dir()
    if args.policy == "pretrained" or (args.policy == "auto" and (cached / "pretrain.json").is_file()):
        from sgpo.tasks.tiny import ensure_tiny_policy

        return ensure_tiny_policy()
    return build_tiny_policy(root / "tiny", seed=0)


def prompts_for(n: int) -> list[str]:
    from sgpo.tasks.arith import format_prompt, generate_split

    problems = generate_split("bench", (4, 5, 6), (n + 2) // 3, seed=0)
    return [format_prompt(p.problem) for p in problems[:n]]


def run_plain(model: Any, tok: Any, prompts: list[str], max_tokens: int, device: Any) -> tuple[int, float]:
    import torch

    enc = tok(prompts, return_tensors="pt", padding=True).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **enc,
            do_sample=True,
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            max_new_tokens=max_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    tokens = 0
    for row in new:
        tokens += row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
    return tokens, dt


def want_vllm(args: argparse.Namespace) -> bool:
    if args.vllm is not None:
        return bool(args.vllm)
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def run_vllm(args: argparse.Namespace, path: Path, prompts: list[str], params: Any, dtype: Any) -> float:
    """Median tokens/s of the vllm engine on the same prompts and sampling (start-up and warm-up excluded)."""
    import torch

    from sgpo.generator.sampling import SamplingParams
    from sgpo.generator.vllm_engine import VLLMEngine

    cpu = not torch.cuda.is_available()
    t0 = time.perf_counter()
    engine = VLLMEngine(
        str(path),
        dtype=str(dtype).removeprefix("torch."),
        max_num_seqs=args.batch,
        enforce_eager=cpu,
        kv_cache_memory_bytes=(1 << 30) if cpu else None,
    )
    print(f"vllm engine start-up {time.perf_counter() - t0:.1f}s (enforce_eager={cpu})")
    engine.generate(prompts[:1], SamplingParams(n=8, max_tokens=8))
    rates = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        results = engine.generate(prompts, params)
        dt = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for res in results for c in res.completions)
        rates.append(tokens / dt)
        print(f"repeat {r}: vllm engine {tokens} tok in {dt:.2f}s = {tokens / dt:.0f} tok/s")
    engine.close()
    return statistics.median(rates)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", choices=["auto", "pretrained", "random"], default="auto")
    p.add_argument("--shape", choices=["tiny", "qwen2.5-0.5b"], default="tiny")
    p.add_argument("--batch", type=int, default=64, help="sequences per batch (prompts x n)")
    p.add_argument("--n", type=int, default=8, help="completions per prompt for the engine (RL group size)")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument(
        "--vllm",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the vllm engine (default: when vLLM is installed)",
    )
    args = p.parse_args()
    if args.batch % args.n:
        p.error(f"--batch ({args.batch}) must be a multiple of --n ({args.n})")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sgpo.generator.hf import HFEngine
    from sgpo.generator.sampling import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}  host {platform.node()}")
    print(
        f"machine {platform.machine()} {platform.processor() or ''} cpus {os.cpu_count()} "
        f"torch {torch.__version__} threads {torch.get_num_threads()} device {device} dtype {dtype}"
    )
    if device.type == "cuda":
        print(f"gpu {torch.cuda.get_device_name()}")
    print(f"load average before {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_policy(args, Path(tmp))
        print(f"policy {path} shape {args.shape}")
        base_rss = rss_mib()
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        n_params = sum(x.numel() for x in model.parameters())
        print(
            f"params {n_params / 1e6:.2f}M  rss after loading the plain model {rss_mib() - base_rss:.0f} MiB"
        )
        prompts = prompts_for(args.batch // args.n)
        plain_prompts = [q for q in prompts for _ in range(args.n)]
        engine = HFEngine(
            str(path), device=device.type, dtype=str(dtype).removeprefix("torch."), max_batch_size=args.batch
        )
        params = SamplingParams(n=args.n, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens)
        # warm-up (allocator, lazy init) on both sides
        run_plain(model, tok, plain_prompts[:8], 8, device)
        engine.generate(prompts[:1], SamplingParams(n=8, max_tokens=8))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        plain_rates, engine_rates = [], []
        for r in range(args.repeats):
            tokens, dt = run_plain(model, tok, plain_prompts, args.max_tokens, device)
            plain_rates.append(tokens / dt)
            t0 = time.perf_counter()
            results = engine.generate(prompts, params)
            if device.type == "cuda":
                torch.cuda.synchronize()
            edt = time.perf_counter() - t0
            etokens = sum(len(c.token_ids) for res in results for c in res.completions)
            engine_rates.append(etokens / edt)
            print(
                f"repeat {r}: generate {tokens} tok in {dt:.2f}s = {tokens / dt:.0f} tok/s | "
                f"engine {etokens} tok in {edt:.2f}s = {etokens / edt:.0f} tok/s"
            )
        engine.close()
        pm, em = statistics.median(plain_rates), statistics.median(engine_rates)
        vm = run_vllm(args, path, prompts, params, dtype) if want_vllm(args) else None
        print(
            f"median tokens/s at batch {args.batch}: plain generate {pm:.0f}, hf engine {em:.0f}, ratio {em / pm:.2f}"
        )
        if vm is not None:
            print(
                f"median tokens/s at batch {args.batch}: vllm engine {vm:.0f}, vllm / hf engine {vm / em:.2f}, "
                f"vllm / plain generate {vm / pm:.2f}"
            )
        print(f"peak rss {peak_rss_mib():.0f} MiB (process; both sides loaded)")
        if device.type == "cuda":
            print(f"peak cuda memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":  # a main guard: vLLM's engine core may start by spawning this module
    sys.exit(main())
