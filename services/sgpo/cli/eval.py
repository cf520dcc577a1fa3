"""`sgpo eval --model DIR`: a model's accuracy on math benchmarks (avg@k, pass@k), sampled by a generator
engine in-process and scored by the verifier. The evaluation itself is `sgpo.tasks.evaluate.evaluate`.

`sgpo eval --watch RUN_DIR`: the periodic held-out evaluation of a running (deployed) training run, as `sgpo
train` makes it: every `--eval-every` steps' checkpoint, into RUN_DIR/eval.jsonl, checkpoints/best and the
run's trackers (`sgpo.launch.evalwatch`)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from sgpo.tasks.benchmarks import BENCHMARKS, BenchmarkDataError, default_data_dir, parse_benchmarks
from sgpo.tasks.evaluate import (
    CONCURRENT_CALLS,
    DEFAULT_BATCH,
    PROMPT_STYLES,
    EvalOptions,
    UsageError,
)
from sgpo.tasks.models import MODEL_ALIASES

HELP = (
    "evaluate a model on math benchmarks (avg@k, pass@k) with a generator engine and the verifier; "
    "--watch RUN_DIR: a training run's held-out evaluation, checkpoint by checkpoint"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        help="a local Hugging Face model folder (the tiny policy from `sgpo pretrain --out DIR`, a run "
        "checkpoint such as runs/NAME/checkpoints/step-N, a downloaded model), or 'tiny' / 'tiny-chat' / "
        "'tiny-random'",
    )
    p.add_argument(
        "--benchmarks",
        default="all",
        help=f"comma-separated, from {', '.join(BENCHMARKS)}; or 'all' (default)",
    )
    p.add_argument("--k", type=int, default=4, help="samples per problem (default 4); avg@k averages them")
    p.add_argument(
        "--pass-k",
        help="comma-separated k values for pass@k, each <= --k (default: 1 and --k)",
    )
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature, 0 = greedy (0.6)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1.0)")
    p.add_argument(
        "--max-tokens",
        type=int,
        help="completion budget in tokens (default: 256 for the tiny policy, 4096 otherwise; "
        "capped by the model's context)",
    )
    p.add_argument(
        "--limit", type=int, help="only the first N problems of each benchmark (of each level for arith)"
    )
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="generator engine (default hf)")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="hf engine device (default auto)"
    )
    p.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="weights dtype (auto: float32 on CPU, bfloat16 on GPU)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"prompts per generate call (default {DEFAULT_BATCH['hf']}; vllm keeps "
        f"{CONCURRENT_CALLS['vllm']} calls in flight)",
    )
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0): same seed, same samples")
    p.add_argument(
        "--out",
        type=Path,
        help="result JSON (default eval-results/<model>-<UTC time>.json); per-item records go to "
        "<stem>.items.jsonl next to it",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"the shared reference data folder (default {default_data_dir()})",
    )
    p.add_argument(
        "--prompt-template",
        default="auto",
        help="auto (default: a tiny policy -> the prompt it was trained on, chat template -> chat with the \\boxed{} "
        "instruction, else plain text), tiny, chat, plain, or a template string containing {problem}",
    )
    p.add_argument(
        "--threads", type=int, help="torch CPU threads for the hf engine (default: torch's choice)"
    )
    p.add_argument("--max-model-len", type=int, help="cap the context length (prompt + completion)")
    p.add_argument(
        "--gpu-memory-utilization", type=float, default=0.85, help="vllm: fraction of GPU memory (0.85)"
    )
    p.add_argument(
        "--verifier-workers",
        type=int,
        help="verifier worker processes for symbolic checks (default: CPU cores, at most 8)",
    )
    p.add_argument(
        "--verifier-deadline-s", type=float, default=5.0, help="per-answer budget of a symbolic check (5)"
    )
    p.add_argument(
        "--save-completions",
        action="store_true",
        help="also write every completion's text to the items JSONL",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    w = p.add_argument_group(
        "watching a run (--watch RUN_DIR instead of --model; also --max-tokens, --engine, --device, --dtype, "
        "--threads)"
    )
    w.add_argument(
        "--watch",
        type=Path,
        metavar="RUN_DIR",
        help="follow RUN_DIR/checkpoints and evaluate held-out accuracy as `sgpo train` does: lines in "
        "RUN_DIR/eval.jsonl, checkpoints/best, eval/* in the run's trackers; restarts skip evaluated steps",
    )
    w.add_argument(
        "--eval-every",
        type=int,
        help="evaluate checkpoints of steps that are multiples of K (default: recipe.toml, run.toml's "
        "trainer keep_every, else 20); set the trainer's keep_every to it",
    )
    w.add_argument(
        "--eval-samples", type=int, help="completions per problem, avg@k (default: as before, else 4)"
    )
    w.add_argument(
        "--eval-temperature",
        type=float,
        help="sampling temperature, 0 = greedy (default: as before, else 1.0)",
    )
    w.add_argument(
        "--eval-set",
        type=Path,
        help="held-out JSONL (problem, answer, steps or level; default RUN_DIR/eval_problems.jsonl)",
    )
    w.add_argument(
        "--config",
        type=Path,
        help="the run config TOML: [orchestrator.prompt] renders problems, [orchestrator.sampling] max_tokens "
        "bounds answers (default RUN_DIR/run.toml)",
    )
    w.add_argument(
        "--eval-limit",
        type=int,
        default=0,
        help="only the first N problems of each level (default 0: all); cheaper and noisier",
    )
    w.add_argument("--initial-policy", type=Path, help="the policy the run started from: evaluated as step 0")
    w.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="the run's last step: evaluated too, then exit (default 0: watch until SIGTERM)",
    )
    w.add_argument("--poll-s", type=float, default=5.0, help="seconds between looks for new checkpoints (5)")
    w.add_argument(
        "--tracking",
        help="tracker backends, comma-separated, or none (default: RUN_DIR/tracking.toml, else tensorboard)",
    )
    w.add_argument("--once", action="store_true", help="evaluate the checkpoints there now, then exit")


def _parse_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated integers like 1,4; got {text!r}") from None
    if not values:
        raise UsageError(f"{flag} is empty; give comma-separated integers like 1,4")
    return values


def model_folder(model: str) -> Path:
    """The model folder `--model` names (an alias is resolved later, once the data has loaded); a missing or
    incomplete folder is a UsageError saying what to give."""
    path = Path(model).expanduser()
    if not path.exists():
        raise UsageError(
            f"--model {model} does not exist; give a local Hugging Face model folder (config.json, tokenizer, "
            "safetensors): e.g. `sgpo pretrain --preset tiny --out DIR` writes one, a run writes "
            "runs/NAME/checkpoints/step-N, and `huggingface-cli download ID --local-dir DIR` fetches a hub model"
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UsageError(
            f"--model {model} is not a Hugging Face model folder (no config.json in it); give the folder that "
            "save_pretrained wrote"
        )
    return path


def resolve_options(args: argparse.Namespace) -> EvalOptions:
    """Check every option before anything is loaded or written; raises UsageError naming the flag."""
    try:
        benchmarks = parse_benchmarks(args.benchmarks)
    except ValueError as e:
        raise UsageError(f"--benchmarks: {e}") from None
    if args.k < 1:
        raise UsageError(f"--k must be >= 1 sample per problem; got {args.k}")
    pass_k = sorted({1, args.k}) if args.pass_k is None else sorted(set(_parse_ints(args.pass_k, "--pass-k")))
    bad = [k for k in pass_k if not 1 <= k <= args.k]
    if bad:
        raise UsageError(
            f"--pass-k {','.join(map(str, bad))}: pass@k needs 1 <= k <= --k={args.k} samples per problem; "
            f"raise --k to {max(bad)} or drop those values"
        )
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise UsageError(f"--temperature must be >= 0 (0 = greedy); got {args.temperature}")
    if not math.isfinite(args.top_p) or not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1]; got {args.top_p}")
    for flag, value in (
        ("--max-tokens", args.max_tokens),
        ("--limit", args.limit),
        ("--batch-size", args.batch_size),
        ("--threads", args.threads),
        ("--verifier-workers", args.verifier_workers),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1; got {value}")
    if args.max_model_len is not None and args.max_model_len < 16:
        raise UsageError(f"--max-model-len must be >= 16 tokens; got {args.max_model_len}")
    if not math.isfinite(args.verifier_deadline_s) or not 0 < args.verifier_deadline_s <= 600:
        raise UsageError(f"--verifier-deadline-s must be in (0, 600] seconds; got {args.verifier_deadline_s}")
    if not 0 < args.gpu_memory_utilization <= 1:
        raise UsageError(f"--gpu-memory-utilization must be in (0, 1]; got {args.gpu_memory_utilization}")
    if args.engine == "vllm" and args.device == "cpu":
        raise UsageError("--engine vllm runs on GPUs; use --device cuda (or auto), or --engine hf on CPU")
    template = args.prompt_template
    if template not in PROMPT_STYLES and "{problem}" not in template:
        raise UsageError(
            f"--prompt-template must be one of {', '.join(PROMPT_STYLES)} or a string containing {{problem}}; "
            f"got {template!r}"
        )
    # an alias ('tiny' may pretrain for minutes) is resolved in `run`, once the data has loaded
    model_path = Path(args.model) if args.model in MODEL_ALIASES else model_folder(args.model)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or Path("eval-results") / f"{Path(args.model).name or 'model'}-{stamp}.json"
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'results.json'}")
    if out.suffix != ".json":
        raise UsageError(
            f"--out {out} should end in .json (the per-item records go next to it as .items.jsonl)"
        )
    cpus = os.cpu_count() or 1
    return EvalOptions(
        model=args.model,
        model_path=model_path,
        benchmarks=benchmarks,
        k=args.k,
        pass_k=pass_k,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        limit=args.limit,
        engine=args.engine,
        device=args.device,
        dtype=args.dtype,
        batch_size=args.batch_size or DEFAULT_BATCH[args.engine],
        seed=args.seed,
        out=out,
        data_dir=args.data_dir or default_data_dir(),
        prompt_template=template,
        threads=args.threads,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        verifier_workers=args.verifier_workers or max(1, min(cpus, 8)),
        verifier_deadline_s=args.verifier_deadline_s,
        save_completions=args.save_completions,
        progress=not args.no_progress,
    )


def _watch(args: argparse.Namespace) -> int:
    from sgpo.launch.evalwatch import WatchError, WatchOptions, watch
    from sgpo.launch.tracking import TrackingError

    tracking = None
    if args.tracking is not None:
        from sgpo.cli.train import parse_tracking

        try:
            tracking = parse_tracking(args.tracking)
        except argparse.ArgumentTypeError as e:
            print(f"error: --tracking: {e}", file=sys.stderr)
            return 2
    for flag, value in (("--threads", args.threads), ("--max-tokens", args.max_tokens)):
        if value is not None and value < 1:
            print(f"error: {flag} must be >= 1; got {value}", file=sys.stderr)
            return 2
    opts = WatchOptions(
        run_dir=args.watch,
        eval_every=args.eval_every,
        samples=args.eval_samples,
        temperature=args.eval_temperature,
        max_tokens=args.max_tokens,
        eval_set=args.eval_set,
        config=args.config,
        initial_policy=args.initial_policy,
        max_steps=args.max_steps,
        engine=args.engine,
        device=args.device,
        dtype=args.dtype,
        threads=args.threads,
        poll_s=args.poll_s,
        tracking=tracking,
        once=args.once,
        limit=args.eval_limit,
    )
    try:
        return watch(opts)
    except (WatchError, TrackingError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sgpo.tasks.benchmarks import load_benchmark
    from sgpo.tasks.evaluate import evaluate, print_table
    from sgpo.tasks.models import resolve_model

    if args.watch is not None:
        if args.model is not None:
            print(
                "error: give --model (one model) or --watch RUN_DIR (a run's checkpoints), not both",
                file=sys.stderr,
            )
            return 2
        return _watch(args)
    if args.model is None:
        print(
            "error: give --model DIR (a model to evaluate) or --watch RUN_DIR (a training run)",
            file=sys.stderr,
        )
        return 2
    err = Console(stderr=True)
    try:
        opts = resolve_options(args)
        data = {name: load_benchmark(name, opts.data_dir, opts.limit) for name in opts.benchmarks}
        if opts.model in MODEL_ALIASES:
            opts.model_path = Path(resolve_model(opts.model))
        result = evaluate(opts, data, err)
    except (UsageError, BenchmarkDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(result, Console(width=None if sys.stdout.isatty() else 140))  # logs get the whole table
    print(f"wrote {opts.out} and {opts.items_path}")
    return 0
