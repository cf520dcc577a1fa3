"""How far vLLM's sampled-token logprobs are from the trainer's recomputation of the same tokens.

    bash scripts/vllm-env.sh                                         # the vLLM environment (CPU build)
    ~/.cache/sgpo/vllm-venv/bin/python bench/logprob_gap.py          # tiny policy, fp32 and bf16
    python bench/logprob_gap.py --dtypes bfloat16 --policy /path/to/hf-folder   # on a GPU with vLLM

For each dtype and each of vLLM's logprobs modes (`processed_logprobs`, what the vllm engine reports, and
`raw_logprobs`, vLLM's default) vLLM samples completions of the tiny task's prompts under several sampling
settings; the trainer's `compute_token_logprobs` recomputes the same tokens' logprobs at the sampling
temperature with the model in the same dtype (what `logp_old = "recompute"` would give). Printed per row:
the mean and max |gap| in nats, the mean signed gap (vLLM - trainer), and mean |exp(gap) - 1|, the error the
gap puts into the PPO ratio at the first optimizer step of a batch (where it should be exactly 1). The gap the
trainer can live with is a small fraction of the clip range (0.2): docs/generator.md ("Logprobs") decides from
these rows where `logp_old = "recompute"` is needed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from typing import Any

# (label, temperature, top_p, top_k)
SETTINGS = [
    ("T=1", 1.0, 1.0, 0),
    ("T=0.7", 0.7, 1.0, 0),
    ("T=1 top_p=0.9", 1.0, 0.9, 0),
    ("T=0.7 top_p=0.9", 0.7, 0.9, 0),
    ("T=1 top_k=20", 1.0, 1.0, 20),
]


def recompute(model: Any, rows: list[tuple[list[int], list[int]]], temperature: float) -> list[list[float]]:
    """The trainer's logprobs of each row's completion tokens (left-padded batch, as the trainer batches)."""
    import torch

    from sgpo.trainer.logprobs import compute_token_logprobs

    out: list[list[float]] = []
    for k in range(0, len(rows), 32):
        chunk = rows[k : k + 32]
        width = max(len(p) + len(t) for p, t in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, t) in enumerate(chunk):
            seq = [*p, *t]
            ids[i, width - len(seq) :] = torch.tensor(seq)
            mask[i, width - len(seq) :] = 1
        with torch.no_grad():
            lp = compute_token_logprobs(
                model, ids.to(model.device), mask.to(model.device), temperature=temperature
            )
        out.extend(lp[i, lp.shape[1] - len(t) :].float().tolist() for i, (_, t) in enumerate(chunk))
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", help="HF folder (default: the shipped tiny policy)")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--modes", default="processed_logprobs,raw_logprobs")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=96)
    args = p.parse_args()

    import torch
    import vllm
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm.inputs import TokensPrompt

    from sgpo.tasks.arith import format_prompt, generate_split

    if args.policy:
        path = args.policy
    else:
        from sgpo.tasks.tiny import ensure_tiny_policy

        path = str(ensure_tiny_policy())
    gpu = torch.cuda.is_available()
    print(f"date {datetime.datetime.now().isoformat(timespec='seconds')}  host {platform.node()}")
    print(
        f"machine {platform.machine()} cpus {os.cpu_count()} torch {torch.__version__} vllm {vllm.__version__} "
        f"device {'cuda ' + torch.cuda.get_device_name() if gpu else 'cpu'}  load {os.getloadavg()}"
    )
    print(f"policy {path}; {args.prompts} prompts x n={args.n}, max_tokens {args.max_tokens}")
    tok = AutoTokenizer.from_pretrained(path)
    problems = generate_split("logprob-gap", (4, 5, 6), (args.prompts + 2) // 3, seed=0)[: args.prompts]
    prompt_ids = [list(tok(format_prompt(q.problem))["input_ids"]) for q in problems]
    header = f"{'dtype':9} {'mode':19} {'sampling':16} {'tokens':>7} {'mean|gap|':>10} {'max|gap|':>9} {'mean gap':>9} {'mean|ratio-1|':>13}"
    print(header)
    print("-" * len(header))
    for dtype in args.dtypes.split(","):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        model = model.to("cuda" if gpu else "cpu").eval()
        for mode in args.modes.split(","):
            # CPU: the vllm engine's settings (an explicit KV cache; whole prompts per step, see vllm_engine.py)
            extra: dict[str, Any] = (
                {} if gpu else {"kv_cache_memory_bytes": 256 << 20, "enable_chunked_prefill": False}
            )
            t0 = time.perf_counter()
            llm = vllm.LLM(
                path,
                dtype=dtype,
                logprobs_mode=mode,
                enforce_eager=True,
                seed=0,
                gpu_memory_utilization=0.3,
                **extra,
            )
            started = time.perf_counter() - t0
            for label, temperature, top_p, top_k in SETTINGS:
                sp = vllm.SamplingParams(
                    n=args.n, temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=args.max_tokens,
                    logprobs=0, seed=1,
                )  # fmt: skip
                outs = llm.generate(
                    [TokensPrompt(prompt_token_ids=q) for q in prompt_ids], sp, use_tqdm=False
                )
                rows, got = [], []
                for q, out in zip(prompt_ids, outs, strict=True):
                    for o in out.outputs:
                        toks = list(o.token_ids)
                        rows.append((q, toks))
                        got.append([float(d[t].logprob) for t, d in zip(toks, o.logprobs, strict=True)])
                ref = recompute(model, rows, temperature)
                gaps = [a - b for g, r in zip(got, ref, strict=True) for a, b in zip(g, r, strict=True)]
                absg = [abs(x) for x in gaps]
                ratio = statistics.fmean(abs(pow(2.718281828459045, x) - 1) for x in gaps)
                print(
                    f"{dtype:9} {mode:19} {label:16} {len(gaps):7d} {statistics.fmean(absg):10.2e} "
                    f"{max(absg):9.2e} {statistics.fmean(gaps):+9.2e} {ratio:13.2e}",
                    flush=True,
                )
            print(f"  ({dtype} {mode}: engine start-up {started:.0f} s)")
            del llm
            import gc

            gc.collect()
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
