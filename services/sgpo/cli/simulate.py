"""`sgpo simulate`: GRPO vs SGPO learning curves in the paper's stylized K-step model (`sgpo.simulate`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sgpo.simulate import SimConfig, simulate

HELP = "simulate the stylized K-step model: updates GRPO vs SGPO need to reach 50%% and 90%% success"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SimConfig()
    p.add_argument(
        "--k", type=int, nargs="+", default=list(d.k_values), help="numbers of steps K to simulate"
    )
    p.add_argument("--group-size", type=int, default=d.group_size, help="responses per group (G)")
    p.add_argument(
        "--groups-per-update", type=int, default=d.groups_per_update, help="groups per policy update"
    )
    p.add_argument(
        "--initial-success", type=float, default=d.initial_success, help="success probability at start"
    )
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate on the step logits")
    p.add_argument("--max-updates", type=int, default=d.max_updates, help="give up after this many updates")
    p.add_argument("--seeds", type=int, default=d.seeds, help="independent runs per setting (mean reported)")
    p.add_argument(
        "--out", type=Path, default=Path("runs/simulate"), help="folder for the PNG and JSON results"
    )


def sim_config(args: argparse.Namespace) -> SimConfig:
    if args.group_size < 2:
        raise SystemExit(
            f"error: GRPO needs at least 2 responses per group; got --group-size {args.group_size}"
        )
    if not 0.0 < args.initial_success < 0.9:
        raise SystemExit(f"error: --initial-success must be in (0, 0.9); got {args.initial_success}")
    if any(k < 1 for k in args.k) or args.seeds < 1 or args.max_updates < 1 or args.lr <= 0:
        raise SystemExit("error: --k, --seeds, --max-updates must be >= 1 and --lr > 0")
    return SimConfig(
        tuple(args.k),
        args.group_size,
        args.groups_per_update,
        args.initial_success,
        args.lr,
        args.max_updates,
        args.seeds,
    )


def run(args: argparse.Namespace) -> int:
    simulate(sim_config(args), args.out)
    return 0
