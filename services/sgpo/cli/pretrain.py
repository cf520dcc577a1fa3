"""`sgpo pretrain --preset tiny|tiny-chat`: SFT a tiny policy (or find it in the cache) and print its accuracy table."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from sgpo.tasks.chat import PRESETS
from sgpo.tasks.tiny import policy_dir, shipped_comparison

HELP = (
    "pretrain a tiny policy (tiny, or tiny-chat) by SFT on easy arithmetic chains; print its accuracy table"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="which recipe (default: tiny)")
    p.add_argument("--out", type=Path, help="write the policy here instead of the cache")
    p.add_argument("--cache-dir", type=Path, help="cache root (default: $SGPO_CACHE_DIR or ~/.cache/sgpo)")
    p.add_argument("--force", action="store_true", help="pretrain again even if the cache has this preset")
    p.add_argument("--seed", type=int, help="override the preset's seed (a different cache entry)")
    p.add_argument("--iters", type=int, help="override the preset's SFT iterations (a different cache entry)")
    p.add_argument("--eval-per-level", type=int, help="override the test problems per level of the table")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores, at most 8)")
    p.add_argument("--export-data", type=Path, help="also write the task's train/test JSONL splits here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    if args.seed is not None:
        preset = replace(preset, seed=args.seed)
    if args.iters is not None:
        if args.iters < 1:
            print(f"error: --iters must be >= 1; got {args.iters}", file=sys.stderr)
            return 2
        preset = preset.with_iters(args.iters)
    if args.eval_per_level is not None:
        if args.eval_per_level < 1:
            print(f"error: --eval-per-level must be >= 1; got {args.eval_per_level}", file=sys.stderr)
            return 2
        preset = replace(preset, eval_per_level=args.eval_per_level)
    if args.threads is not None and args.threads < 1:
        print(f"error: --threads must be >= 1; got {args.threads}", file=sys.stderr)
        return 2
    from sgpo.tasks.pretrain import pretrain, print_table

    target = args.out or policy_dir(preset, args.cache_dir)
    if (target / "pretrain.json").is_file() and not args.force:
        record = json.loads((target / "pretrain.json").read_text())
        print(f"cached: {target}")
    else:
        record = pretrain(preset, target, progress=not args.no_progress, threads=args.threads)
        print(f"wrote {target}")
    print_table(record, preset)
    print(shipped_comparison(target, preset))
    if args.export_data:
        from sgpo.tasks.arith import write_splits

        paths = write_splits(
            args.export_data,
            preset.sft_steps,
            preset.eval_steps,
            10_000,
            preset.eval_per_level,
            preset.seed,
            preset.task,
        )
        print(f"data: {paths['train']} {paths['test']}")
    return 0
