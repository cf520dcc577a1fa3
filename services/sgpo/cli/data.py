"""`sgpo data --preset tiny --out DIR`: write the RL prompts and the held-out set a tiny run uses.

The same files `sgpo train` writes into its run folder: train_problems.jsonl (the RL levels) and
eval_problems.jsonl (every level, disjoint from the training prompts). Compose and Helm use this command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "write the synthetic task's RL prompts and held-out problems (train_problems.jsonl, eval_problems.jsonl)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["tiny"], default="tiny", help="run preset (default: tiny)")
    p.add_argument("--out", type=Path, required=True, help="folder to write the two files into")
    p.add_argument("--seed", type=int, default=0, help="seed of the problem generator")


def run(args: argparse.Namespace) -> int:
    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import write_datasets

    args.out.mkdir(parents=True, exist_ok=True)
    for path in write_datasets(args.out, args.seed, TRAIN_PRESETS[args.preset]):
        print(f"wrote {path} ({sum(1 for _ in path.open())} problems)")
    return 0
