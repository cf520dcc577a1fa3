"""`sgpo train --preset tiny`: the whole topology on one machine, as local processes, with progress and plots.

The run itself is `sgpo.launch.train.train`; its module docstring describes the run folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sgpo.launch.presets import TRAIN_PRESETS
from sgpo.launch.train import ALGOS

HELP = "train end to end on one machine: every service as a local process (--preset tiny runs on a CPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", choices=sorted(TRAIN_PRESETS), default="tiny", help="run preset (default: tiny)"
    )
    p.add_argument("--algo", choices=list(ALGOS), default="sgpo", help="algorithm (default: sgpo)")
    p.add_argument("--steps", type=int, help="trainer steps (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="seed for data order, sampling and training")
    p.add_argument("--run-dir", type=Path, help="run folder (default: runs/<preset>-<algo>-s<seed>-<time>)")
    p.add_argument(
        "--eval-every", type=int, help="evaluate held-out accuracy every K steps (default: the preset's)"
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        help="completions per held-out prompt; accuracy is their mean, avg@k (default: the preset's, 4)",
    )
    p.add_argument(
        "--eval-temperature",
        type=float,
        help="sampling temperature of the held-out evaluation; 0 is greedy with one completion "
        "(default: the preset's, 1.0, the rollout temperature)",
    )
    p.add_argument(
        "--policy", type=Path, help="initial policy folder (default: the preset's pretrained policy)"
    )
    p.add_argument("--config", type=Path, help="TOML whose tables override the generated run.toml's")
    p.add_argument("--replay", type=Path, help="offline mode: train on groups recorded by `sgpo record`")
    p.add_argument(
        "--epochs", type=int, default=0, help="with --replay: passes over the file (0: until --steps)"
    )
    p.add_argument(
        "--levels",
        type=parse_levels,
        help="difficulty levels (steps) of the RL prompts, comma-separated (default: the preset's, 3,4,5,6)",
    )
    p.add_argument(
        "--max-sampled",
        type=int,
        help="stop at the first step whose groups cost this many sampled completions (dropped groups "
        "included): equal sampling budgets for algorithms that drop groups (dapo)",
    )
    p.add_argument(
        "--tracking",
        type=parse_tracking,
        help="experiment trackers, comma-separated: tensorboard, wandb, mlflow, or none "
        "(default: [tracking] backends of --config, else tensorboard)",
    )


def parse_tracking(text: str) -> tuple[str, ...]:
    """`--tracking tensorboard,wandb` -> ("tensorboard", "wandb"); `none` -> ()."""
    from sgpo.launch.tracking import BACKENDS

    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if names == ("none",):
        return ()
    bad = [n for n in names if n not in BACKENDS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(BACKENDS)} (or none); got {text!r}")
    return names


def parse_levels(text: str) -> tuple[int, ...]:
    """`--levels 5,6` -> (5, 6); anything but positive integers is a usage error that says so."""
    try:
        levels = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated step counts such as 5,6; got {text!r}"
        ) from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"step counts must be >= 1; got {text!r}")
    return levels


def run(args: argparse.Namespace) -> int:
    from sgpo.cli import options
    from sgpo.launch.train import TrainOptions, train

    return train(options(TrainOptions, args))
