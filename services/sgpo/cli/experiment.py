"""`sgpo experiment online|offline|noise|aggregate --out OUT`: controlled comparisons of algorithms.

Each study (`sgpo.experiments.studies`) is a list of `sgpo train` runs, run one at a time as subprocesses,
each in its own folder OUT/runs/NAME (its output in OUT/runs/NAME/train.log):

- `online`: --algos (sgpo, grpo, dapo) x --seeds (0, 1, 2), every run on the same budget of completions
  sampled (`sgpo train --max-sampled`, dropped groups included) and the same evaluation cadence.
- `offline`: one file of groups recorded once from the initial policy (`sgpo record`, OUT/offline-record/),
  then sgpo and grpo x seeds train on it for --epochs passes (`sgpo train --replay`).
- `noise`: sgpo with judge noise p in --noise (0, 0.25, 0.5, 1.0) x seeds, plus grpo as the reference line.

Runs live in one pool, OUT/runs, named by what varies (`sgpo-s0`, `sgpo-noise0.25-s0`, `offline-grpo-s1`):
a run two studies share (grpo-s0, and sgpo at p = 0, which is plain sgpo) runs once when both studies use the
same budget, steps and cadence. Every run folder keeps the exact command that made it (experiment.json); a
folder whose summary.json says the run completed is skipped, so re-invoking after a crash continues where it
stopped; an interrupted or crashed folder is moved to OUT/attempts/ and the run starts again. A complete run
made by a different command stops the study with an error instead of mixing two settings in one table.

Runs use their own embedded Redis (SGPO_REDIS_URL is not passed on), so a rerun never sees an earlier
attempt's queue. At the end (and with `sgpo experiment aggregate --out OUT`) OUT/results.json, OUT/tables.md
and the PNG plots are written (`sgpo.experiments.report`; every definition in `sgpo.experiments.stats`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sgpo.cli.train import parse_levels
from sgpo.experiments.plan import (
    DEFAULT_BUDGET,
    DEFAULT_EPOCHS,
    DEFAULT_EVAL_EVERY,
    DEFAULT_NOISE,
    DEFAULT_OFFLINE_PROMPTS,
)
from sgpo.experiments.studies import STUDIES
from sgpo.launch.train import ALGOS

HELP = "controlled comparisons: sgpo vs grpo vs dapo on equal budgets, offline, judge noise; aggregate"
DEFAULT_SEEDS = "0,1,2"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers; got {text!r}") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected probabilities in [0, 1]; got {text!r}")
    return values


def _algo_list(text: str, allow_empty: bool = False) -> list[str]:
    algos = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in algos if a not in ALGOS]
    if (not algos and not allow_empty) or bad:
        raise argparse.ArgumentTypeError(f"algorithms are sgpo, grpo, dapo; got {text!r}")
    return algos


def _reference_list(text: str) -> list[str]:
    return _algo_list(text, allow_empty=True)


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--levels",
        type=_str_list,
        help="difficulty levels to plot and tabulate besides overall ('all', or e.g. 5,6; default: the tiny"
        " task's RL levels)",
    )
    p.add_argument(
        "--budgets",
        type=_int_list,
        help="completions sampled at which to compare algorithms (default: 1/4, 1/2, 3/4, all of the budget)",
    )
    p.add_argument(
        "--window", type=int, default=5, help="rolling window (steps) of the all-negative plot (default: 5)"
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    for name, definition in STUDIES.items():
        design = definition.design
        s = sub.add_parser(name, help=definition.description, description=definition.description)
        s.add_argument("--out", type=Path, required=True, help="experiment folder (runs/, results, plots)")
        s.add_argument("--seeds", type=_int_list, default=_int_list(DEFAULT_SEEDS), help="default: 0,1,2")
        s.add_argument(
            "--eval-every",
            type=int,
            default=DEFAULT_EVAL_EVERY,
            help=f"held-out evaluation every K trainer steps, same for every run (default: {DEFAULT_EVAL_EVERY})",
        )
        s.add_argument(
            "--eval-samples",
            type=int,
            help="held-out completions per prompt, same for every run (sgpo train --eval-samples; default: "
            "the preset's)",
        )
        s.add_argument(
            "--eval-temperature",
            type=float,
            help="held-out sampling temperature, 0 greedy (sgpo train --eval-temperature; default: the preset's)",
        )
        s.add_argument("--policy", type=Path, help="initial policy folder (default: the cached tiny policy)")
        s.add_argument(
            "--config", type=Path, help="TOML merged into every run's config (e.g. a learning rate); copied"
        )
        s.add_argument("--preset", choices=["tiny"], default="tiny", help="run preset (default: tiny)")
        if design != "replay":  # a recording's prompts are the preset's
            s.add_argument(
                "--train-levels",
                type=parse_levels,
                help="RL prompt levels of every run (sgpo train --levels; default: the preset's 3,4,5,6)",
            )
        s.add_argument("--dry-run", action="store_true", help="print the exact commands; run nothing")
        s.add_argument("--no-aggregate", action="store_true", help="do not aggregate at the end")
        s.add_argument(
            "--stall-timeout",
            type=float,
            default=900.0,
            help="stop a run (reported failed; the study goes on) when its folder shows no new step, group or"
            " evaluation for this many seconds (default: 900; 0: never)",
        )
        if design == "replay":
            s.add_argument(
                "--algos",
                type=_algo_list,
                default=list(definition.algos),
                help=f"default: {','.join(definition.algos)}",
            )
            s.add_argument(
                "--prompts",
                type=int,
                default=DEFAULT_OFFLINE_PROMPTS,
                help=f"prompts to record, one group each (default: {DEFAULT_OFFLINE_PROMPTS})",
            )
            s.add_argument(
                "--epochs",
                type=int,
                default=DEFAULT_EPOCHS,
                help=f"passes over the recorded file (default: {DEFAULT_EPOCHS})",
            )
            s.add_argument("--record-seed", type=int, default=0, help="seed of the recording (default: 0)")
            s.add_argument(
                "--record", type=Path, help="use this recorded file instead of recording one (`sgpo record`)"
            )
            s.add_argument(
                "--steps", type=int, help="trainer steps (default: epochs x prompts / batch groups, exactly)"
            )
        else:
            s.add_argument(
                "--max-sampled",
                type=int,
                default=DEFAULT_BUDGET,
                help=(
                    "budget: each run ends at the first step whose groups cost >= N completions sampled, dropped"
                    f" ones included (default: {DEFAULT_BUDGET}; 0: no budget, --steps only)"
                ),
            )
            s.add_argument(
                "--steps",
                type=int,
                help="trainer step cap (default: budget / completions per step, which no algorithm hits first)",
            )
            if design == "compare":
                s.add_argument(
                    "--algos",
                    type=_algo_list,
                    default=list(definition.algos),
                    help=f"default: {','.join(definition.algos)}",
                )
            else:
                s.add_argument(
                    "--noise",
                    type=_float_list,
                    default=list(DEFAULT_NOISE),
                    help="default: 0,0.25,0.5,1.0",
                )
                s.add_argument(
                    "--reference",
                    type=_reference_list,
                    default=list(definition.reference),
                    help="baselines on the same budget, drawn as reference lines (default: "
                    f"{','.join(definition.reference)}; '' for none)",
                )
        _aggregate_args(s)
    a = sub.add_parser(
        "aggregate",
        help="results.json, tables.md and plots from the run folders",
        description="read every run folder of OUT's studies; write results.json, tables.md and PNG plots",
    )
    a.add_argument("--out", type=Path, required=True, help="experiment folder")
    a.add_argument("--no-plots", action="store_true", help="tables and results.json only")
    _aggregate_args(a)


def train_supports(flag: str) -> bool:
    """Whether `sgpo train` accepts `flag` (so a study fails up front, not nine runs later)."""
    from sgpo.cli import train

    p = argparse.ArgumentParser(add_help=False)
    train.add_arguments(p)
    return any(flag in a.option_strings for a in p._actions)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sgpo.cli import options
    from sgpo.experiments.plan import StudyOptions, default_policy, plan_study
    from sgpo.experiments.report import aggregate
    from sgpo.experiments.schedule import Runner, print_dry_run

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # a log file: wide tables, no wrapped commands
    out = args.out.resolve()
    if args.study == "aggregate":
        if not (out / "experiment.json").is_file():
            console.print(
                f"[red]error:[/] {out} has no experiment.json: run a study (`sgpo experiment online ...`) first"
            )
            return 2
        aggregate(out, console, args.levels, args.budgets, args.window, plots=not args.no_plots)
        return 0
    if args.config is not None and not args.config.is_file():
        console.print(f"[red]error:[/] --config {args.config} does not exist")
        return 2
    if getattr(args, "record", None) is not None and not args.record.is_file():
        console.print(f"[red]error:[/] --record {args.record} does not exist")
        return 2
    policy = args.policy.resolve() if args.policy is not None else default_policy()
    try:
        study = plan_study(options(StudyOptions, args), policy)
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    if args.dry_run:
        print_dry_run(study, console)
        return 0
    for note in study.notes:
        console.print(f"[yellow]note:[/] {note}")
    if study.budget and not train_supports("--max-sampled"):
        console.print(
            "[red]error:[/] this `sgpo train` has no --max-sampled yet; pass --max-sampled 0 --steps N to cap by steps"
        )
        return 2
    if args.policy is None:
        from sgpo.tasks.tiny import ensure_tiny_policy

        ensure_tiny_policy(progress=True)  # once, here, rather than inside the first run
    elif not (policy / "config.json").is_file():
        console.print(f"[red]error:[/] --policy {policy} is not a model folder (no config.json)")
        return 2
    code = Runner(study, console, stall_timeout=args.stall_timeout).execute()
    if code in (0, 1) and not args.no_aggregate:
        aggregate(out, console, args.levels, args.budgets, args.window)
    return code
