"""`sgpo experiment online|offline|noise|tune|aggregate --out OUT`: controlled comparisons of algorithms.

`tune` is the tuned comparison (`sgpo.experiments.tune`: a per-algorithm learning-rate sweep on the validation
split, the selection rule, finals on test, controls, greedy scores, TRL's GRPO); `score` scores a checkpoint
on a run's held-out problems; `trl-run` trains TRL's GRPOTrainer as a run folder (with a python that imports
trl). `--jobs N` runs N runs at once, each with its own embedded Redis and port range.

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
from typing import Any

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

HELP = "controlled comparisons: sgpo vs grpo vs dapo on equal budgets, offline, judge noise, the tuned study; aggregate"
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


def _lr_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated learning rates; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"learning rates must be > 0; got {text!r}")
    return values


def _selected(text: str) -> dict[str, float]:
    """`sgpo=3e-4,grpo=1e-4` -> {"sgpo": 3e-4, "grpo": 1e-4}."""
    out: dict[str, float] = {}
    for part in (x.strip() for x in text.split(",") if x.strip()):
        algo, _, lr = part.partition("=")
        try:
            out[algo.strip()] = float(lr)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected ALGO=LR pairs such as sgpo=3e-4; got {text!r}"
            ) from None
        if algo.strip() not in ALGOS or out[algo.strip()] <= 0:
            raise argparse.ArgumentTypeError(
                f"expected ALGO=LR with a known algorithm and LR > 0; got {part!r}"
            )
    return out


def _jobs_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once (each `sgpo train` has its own embedded Redis and free ports; default: 1)",
    )


def _tune_args(s: argparse.ArgumentParser) -> None:
    from sgpo.experiments import tune as T

    def csv(xs: object) -> str:
        return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in xs)  # type: ignore[attr-defined]

    s.add_argument("--out", type=Path, required=True, help="experiment folder (runs/, results, plots)")
    s.add_argument(
        "--algos", type=_algo_list, default=list(T.DEFAULT_ALGOS), help=f"default: {csv(T.DEFAULT_ALGOS)}"
    )
    s.add_argument(
        "--lrs", type=_lr_list, default=list(T.DEFAULT_LRS), help=f"swept (default: {csv(T.DEFAULT_LRS)})"
    )
    s.add_argument(
        "--tune-seeds", type=_int_list, default=list(T.DEFAULT_TUNE_SEEDS), help="sweep seeds (default: 0,1)"
    )
    s.add_argument(
        "--seeds",
        type=_int_list,
        default=list(T.DEFAULT_FINAL_SEEDS),
        help="final seeds (default: 0,1,2,3,4)",
    )
    s.add_argument(
        "--control-seeds",
        type=_int_list,
        default=list(T.DEFAULT_CONTROL_SEEDS),
        help="controls (default: 0,1,2)",
    )
    s.add_argument(
        "--noise", type=_float_list, default=list(T.DEFAULT_NOISE), help="judge noise p (default: 0,0.5,1)"
    )
    s.add_argument(
        "--no-color-scope-control", action="store_true", help="no color_scope = all_incorrect runs"
    )
    s.add_argument(
        "--steps", type=int, default=T.DEFAULT_STEPS, help=f"steps per run (default: {T.DEFAULT_STEPS})"
    )
    s.add_argument(
        "--max-sampled",
        type=int,
        help="completions sampled per run, dropped ones included (default: steps x completions per step; 0: none)",
    )
    s.add_argument(
        "--eval-every", type=int, default=T.DEFAULT_EVAL_EVERY, help=f"default: {T.DEFAULT_EVAL_EVERY}"
    )
    s.add_argument(
        "--eval-samples", type=int, help="held-out completions per prompt (default: the preset's, 4)"
    )
    s.add_argument("--eval-temperature", type=float, help="held-out temperature (default: the preset's, 1.0)")
    s.add_argument("--no-greedy", action="store_true", help="no greedy score of the final checkpoints")
    s.add_argument("--policy", type=Path, help="initial policy folder (default: the cached tiny policy)")
    s.add_argument("--config", type=Path, help="TOML merged into every run's config")
    s.add_argument("--preset", choices=["tiny"], default="tiny", help="run preset (default: tiny)")
    s.add_argument(
        "--train-levels", type=parse_levels, help="RL prompt levels (default: the preset's 3,4,5,6)"
    )
    s.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="cuda puts every run's generator and trainer on the GPU, fp32 (runs share it); auto: cuda when "
        "torch sees one (default)",
    )
    s.add_argument(
        "--trl-python",
        type=Path,
        help="a python that imports trl (its own venv): adds TRL's GRPOTrainer to the sweep and the finals",
    )
    s.add_argument(
        "--trl-lr", type=float, help="TRL's learning rate, not swept (default: its best rate from the sweep)"
    )
    s.add_argument(
        "--phase",
        choices=["all", "sweep", "final"],
        default="all",
        help="sweep only; final only (needs --selected or a complete sweep); or both (default)",
    )
    s.add_argument(
        "--selected",
        type=_selected,
        help="the learning rates to use instead of the sweep's selection, e.g. sgpo=3e-4,grpo=1e-4 (a sweep run "
        "in an earlier session)",
    )
    s.add_argument("--dry-run", action="store_true", help="print the exact commands; run nothing")
    s.add_argument("--no-aggregate", action="store_true", help="do not aggregate at the end")
    s.add_argument("--stall-timeout", type=float, default=900.0, help="as the other studies (default: 900)")
    _jobs_args(s)


def _score_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--run", type=Path, required=True, help="a run folder (its eval_problems.jsonl, run.toml)")
    s.add_argument(
        "--out", type=Path, required=True, help="folder for score.json, eval.json and summary.json"
    )
    s.add_argument("--model", type=Path, help="model folder (default: the run's newest checkpoints/step-N)")
    s.add_argument("--problems", type=Path, help="problems JSONL (default: the run's eval_problems.jsonl)")
    s.add_argument("--k", type=int, default=1, help="samples per problem (default 1; 1 at temperature 0)")
    s.add_argument("--temperature", type=float, default=0.0, help="0 greedy (default)")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="hf engine device")


def _trl_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", type=Path, required=True, help="the run folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lr", type=float, required=True)
    s.add_argument("--steps", type=int, required=True)
    s.add_argument("--eval-every", type=int, default=20)
    s.add_argument("--eval-split", choices=["test", "validation"], default="test")
    s.add_argument("--eval-samples", type=int, default=4)
    s.add_argument("--eval-temperature", type=float, default=1.0)
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--policy", type=Path, help="initial policy folder (default: the cached tiny policy)")
    s.add_argument("--levels", type=parse_levels, help="RL prompt levels (default: the preset's)")
    s.add_argument("--config", type=Path, help="TOML whose [algo], [trainer], [orchestrator] tables apply")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="study", metavar="STUDY", required=True)
    _tune_args(
        sub.add_parser(
            "tune",
            help="per-algorithm lr sweep on a validation split, then tuned finals x seeds on test, "
            "controls, greedy scores, TRL",
            description="the tuned study: services/sgpo/experiments/tune.py",
        )
    )
    _score_args(
        sub.add_parser(
            "score",
            help="score a run's checkpoint (or any model) on the run's held-out problems (sgpo eval's harness)",
        )
    )
    _trl_args(
        sub.add_parser(
            "trl-run",
            help="TRL's GRPOTrainer as a study run folder (run with a python that imports trl)",
        )
    )
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
        _jobs_args(s)
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
    if args.study == "score":
        return run_score(args, console)
    if args.study == "trl-run":
        return run_trl(args, console)
    if args.study == "tune":
        return run_tune(args, console)
    if args.study == "aggregate":
        if not (out / "experiment.json").is_file():
            console.print(
                f"[red]error:[/] {out} has no experiment.json: run a study (`sgpo experiment online ...`) first"
            )
            return 2
        aggregate(out, console, args.levels, args.budgets, args.window, plots=not args.no_plots)
        from sgpo.experiments.report import load_plans

        if {"tune", "tune-sweep"} & set(load_plans(out)):
            from sgpo.experiments.tune_report import write_tune_report

            write_tune_report(out, console, plots=not args.no_plots)
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
    code = Runner(study, console, stall_timeout=args.stall_timeout, jobs=args.jobs).execute()
    if code in (0, 1) and not args.no_aggregate:
        aggregate(out, console, args.levels, args.budgets, args.window)
    return code


def _fmt_mean(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run_score(args: argparse.Namespace, console: Any) -> int:
    from sgpo.experiments.score import score_run

    if not (args.run / "eval_problems.jsonl").is_file() and args.problems is None:
        console.print(f"[red]error:[/] {args.run} has no eval_problems.jsonl; give --problems")
        return 2
    if args.k < 1 or args.temperature < 0:
        console.print("[red]error:[/] --k must be >= 1 and --temperature >= 0")
        return 2
    try:
        rec = score_run(
            args.run.resolve(),
            args.out.resolve(),
            k=args.k,
            temperature=args.temperature,
            device=_resolve_device(args.device),
            model=args.model,
            problems=args.problems,
            console=console,
        )
    except (FileNotFoundError, ValueError) as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    accs = " ".join(f"{k}:{v:.2f}" for k, v in rec["accuracy"].items())
    console.print(
        f"{rec['model']} (step {rec['step']}), {rec['split']} split, k={rec['samples']} T={rec['temperature']:g}: "
        f"overall {rec['overall']:.3f} | {accs}",
        highlight=False,
    )
    return 0


def run_trl(args: argparse.Namespace, console: Any) -> int:
    import importlib.util
    import sys
    import tomllib

    from sgpo.experiments.trl_grpo import SETUP, run_trl_study_run

    if importlib.util.find_spec("trl") is None:
        console.print(SETUP.format(exe=sys.executable), markup=False, highlight=False)
        return 2
    if (args.out / "summary.json").exists():
        console.print(f"[red]error:[/] {args.out} already holds a run")
        return 2
    if args.policy is None:
        from sgpo.tasks.tiny import ensure_tiny_policy

        policy = ensure_tiny_policy(progress=True).resolve()
    else:
        policy = args.policy.resolve()
    extra = tomllib.loads(args.config.read_text()) if args.config is not None else {}
    run_trl_study_run(
        args.out.resolve(),
        policy,
        seed=args.seed,
        lr=args.lr,
        steps=args.steps,
        eval_every=args.eval_every,
        eval_split=args.eval_split,
        eval_samples=args.eval_samples,
        eval_temperature=args.eval_temperature,
        device=_resolve_device(args.device),
        levels=args.levels,
        extra=extra,
        log=lambda m: console.print(m, highlight=False, markup=False),
    )
    return 0


def run_tune(args: argparse.Namespace, console: Any) -> int:
    import json

    from sgpo.experiments.plan import default_policy
    from sgpo.experiments.schedule import Runner, print_dry_run, write_plan
    from sgpo.experiments.tune import (
        TuneOptions,
        plan_final,
        plan_sweep,
        select_lrs,
        sweep_finals,
        swept_algos,
    )
    from sgpo.experiments.tune_report import write_tune_report

    out = args.out.resolve()
    for flag, path in (("--config", args.config), ("--trl-python", args.trl_python)):
        if path is not None and not path.is_file():
            console.print(f"[red]error:[/] {flag} {path} does not exist")
            return 2
    policy = args.policy.resolve() if args.policy is not None else default_policy()
    opts = TuneOptions(
        out=out,
        algos=args.algos,
        lrs=args.lrs,
        tune_seeds=args.tune_seeds,
        seeds=args.seeds,
        control_seeds=args.control_seeds,
        noise=args.noise,
        color_scope_control=not args.no_color_scope_control,
        steps=args.steps,
        max_sampled=args.max_sampled,
        eval_every=args.eval_every,
        eval_samples=args.eval_samples,
        eval_temperature=args.eval_temperature,
        greedy=not args.no_greedy,
        config=args.config,
        device=_resolve_device(args.device),
        preset=args.preset,
        train_levels=args.train_levels,
        trl_python=args.trl_python.absolute() if args.trl_python else None,
        trl_lr=args.trl_lr,
    )
    try:
        sweep = plan_sweep(opts, policy)
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        return 2
    if args.jobs < 1:
        console.print("[red]error:[/] --jobs must be >= 1")
        return 2
    if not args.dry_run:
        if args.policy is None:
            from sgpo.tasks.tiny import ensure_tiny_policy

            ensure_tiny_policy(progress=True)
        elif not (policy / "config.json").is_file():
            console.print(f"[red]error:[/] --policy {policy} is not a model folder (no config.json)")
            return 2
    console.print(f"device: {opts.device}; {args.jobs} run(s) at a time")

    def runner(study: Any) -> Runner:
        return Runner(study, console, stall_timeout=args.stall_timeout, jobs=args.jobs)

    code = 0
    selection: dict[str, Any]
    if args.selected:
        selection = {a: {"lr": lr, "given": True} for a, lr in args.selected.items()}
    else:
        if args.dry_run:
            print_dry_run(sweep, console)
        elif args.phase in ("all", "sweep"):
            code = runner(sweep).execute()
        selection = select_lrs(sweep_finals(sweep), swept_algos(opts), opts.lrs, len(opts.tune_seeds))
        if not args.dry_run and code == 0:
            (out / "selection.json").write_text(json.dumps(selection, indent=2))
        for a, s in selection.items():
            table = ", ".join(f"{lr}: {_fmt_mean(v['mean'])} (n={v['n']})" for lr, v in s["table"].items())
            chosen = "none" if s["lr"] is None else f"{s['lr']:g}"
            console.print(f"selection {a}: {chosen} · validation {table}", highlight=False)
    if not args.dry_run and args.phase == "final" and not args.selected:
        from sgpo.experiments.state import run_status

        left = [r.name for r in sweep.runs if run_status(out / "runs" / r.name) != "complete"]
        if left:
            console.print(
                f"[red]error:[/] --phase final selects from the sweep, and {len(left)} sweep runs are not complete"
                f" ({', '.join(left[:4])}{', ...' if len(left) > 4 else ''}): run --phase sweep, or pass --selected"
            )
            return 2
        write_plan(sweep)  # the report reads the whole sweep, whatever parts earlier sessions planned
    missing = [a for a in swept_algos(opts) if selection.get(a, {}).get("lr") is None]
    if (
        args.phase == "sweep"
        or code != 0
        or (missing and not args.dry_run and args.phase == "all" and not args.selected)
    ):
        if missing and code == 0 and args.phase != "sweep":
            console.print(
                f"[red]no learning rate selected for {', '.join(missing)}: the final phase waits[/]"
            )
            code = 1
        if not args.dry_run and not args.no_aggregate:
            write_tune_report(out, console)
        return code
    if args.dry_run and missing:  # show the final phase's commands with a stand-in rate
        print(f"# final phase: after the sweep selects; shown at lr {opts.lrs[0]:g} for {', '.join(missing)}")
        selection = {**selection, **{a: {"lr": opts.lrs[0]} for a in missing}}
    final = plan_final(opts, policy, selection)
    for note in final.notes:
        console.print(f"[yellow]note:[/] {note}")
    if args.dry_run:
        print_dry_run(final, console)
        return 0
    code = runner(final).execute()
    if code in (0, 1) and not args.no_aggregate:
        write_tune_report(out, console)
    return code
