"""`sgpo record --out FILE`: sample groups once from a policy (verified, every wrong answer judged) into a file,
for `sgpo train --replay FILE` (the offline setting; `sgpo.launch.record`)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "record groups sampled once from the initial policy (offline mode) into a file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["tiny"], default="tiny", help="run preset (default: tiny)")
    p.add_argument("--out", type=Path, required=True, help="file to write (read by `sgpo train --replay`)")
    p.add_argument("--prompts", type=int, default=256, help="prompts to sample (one group each)")
    p.add_argument("--seed", type=int, default=0, help="seed for prompt order and sampling")
    p.add_argument("--policy", type=Path, help="policy folder (default: the preset's pretrained policy)")
    p.add_argument("--run-dir", type=Path, help="folder for logs and the generated config (default: <out>.d)")


def run(args: argparse.Namespace) -> int:
    from sgpo.launch.record import record

    return record(args.out, args.prompts, args.seed, args.policy, args.run_dir, args.preset)
