"""`sgpo train --preset tiny` or `sgpo train --recipe recipes/NAME.toml`: the whole topology on one machine, as
local processes (generator replicas, a torchrun trainer, each on its GPUs), with progress and plots.

The run itself is `sgpo.launch.train.train`; its module docstring describes the run folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sgpo.launch.presets import TRAIN_PRESETS
from sgpo.launch.train import ALGOS

HELP = (
    "train end to end on one machine from a recipe: every service as a local process "
    "(--preset tiny runs on a CPU; --recipe recipes/NAME.toml any local Hugging Face model)"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        choices=sorted(TRAIN_PRESETS),
        help="a shipped recipe by name (default: tiny when no --recipe is given)",
    )
    p.add_argument(
        "--recipe",
        type=Path,
        help="recipe TOML ([recipe] table plus service tables; see recipes/ and docs/train-real-model.md)",
    )
    p.add_argument("--algo", choices=list(ALGOS), help="algorithm (default: the recipe's, sgpo)")
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
        "--eval-split",
        choices=["test", "validation"],
        default="test",
        help="held-out problems evaluated (arith task): test (default), or validation, drawn apart from test, "
        "for choosing hyperparameters",
    )
    p.add_argument(
        "--policy",
        help="initial policy: a local Hugging Face folder or an alias such as tiny (default: the recipe's)",
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TOML whose tables override the generated run.toml's (a file with a [recipe] table is the recipe)",
    )
    p.add_argument(
        "--generator-gpus",
        type=parse_gpu_list,
        help="GPUs of the generator replicas, e.g. 0,1 or 0-3: one replica per tensor-parallel group",
    )
    p.add_argument(
        "--trainer-gpus", type=parse_gpu_list, help="GPUs of the trainer, e.g. 2-5: one torchrun process each"
    )
    p.add_argument(
        "--judge-gpus",
        type=parse_gpu_list,
        help="GPUs of a local judge model (the recipe's [recipe.judge_model]), e.g. 6,7",
    )
    p.add_argument(
        "--generator-replicas",
        type=int,
        help="generator replicas without --generator-gpus (e.g. 2 on a CPU; default: the recipe's)",
    )
    p.add_argument(
        "--trainer-procs",
        type=int,
        help="trainer processes without --trainer-gpus (torchrun with gloo on a CPU; default: the recipe's)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="resolve the recipe, layout, policy and every service's config, print the trainer's estimated "
        "peak memory per GPU, and start nothing",
    )
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


def parse_gpu_list(text: str) -> tuple[int, ...]:
    """`--trainer-gpus 2-5` -> (2, 3, 4, 5); a bad list is a usage error that shows the accepted forms."""
    from sgpo.launch.presets import parse_gpus

    try:
        gpus = parse_gpus(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not gpus:
        raise argparse.ArgumentTypeError(f"no GPU given in {text!r}; e.g. 0,1 or 2-5")
    return gpus


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

    opts = options(TrainOptions, args)
    if args.dry_run:
        from sgpo.launch.dryrun import dry_run

        return dry_run(opts)
    return train(opts)
