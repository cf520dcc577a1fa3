"""`sgpo experiment online|offline|noise|aggregate --out OUT`: the controlled comparisons of issue 8.

Each study is a list of `sgpo train` runs, run one at a time as subprocesses, each in its own folder
OUT/runs/NAME (its output in OUT/runs/NAME/train.log):

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
and the PNG plots are written; see sgpo.launch.aggregate for every definition.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.launch.train import parse_levels

HELP = (
    "controlled comparisons (issue 8): sgpo vs grpo vs dapo on equal budgets, offline, judge noise; aggregate"
)

STUDIES = ("online", "offline", "noise")
DEFAULT_SEEDS = "0,1,2"
DEFAULT_BUDGET = 12800  # completions sampled: 100 trainer steps of the tiny preset (16 groups x 8) for grpo
DEFAULT_EVAL_EVERY = 10
DEFAULT_NOISE = "0,0.25,0.5,1.0"
DEFAULT_OFFLINE_PROMPTS = 256
DEFAULT_EPOCHS = 4


# --------------------------------------------------------------------------------------------------------
# Arguments


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
    bad = [a for a in algos if a not in ("sgpo", "grpo", "dapo")]
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
    descriptions = {
        "online": "sgpo, grpo and dapo x seeds, on the same budget of completions sampled",
        "offline": "record groups once from the initial policy, then sgpo vs grpo x seeds for several epochs",
        "noise": "sgpo with a judge whose first-error index is random for a fraction p of responses, plus grpo",
    }
    for name in STUDIES:
        s = sub.add_parser(name, help=descriptions[name], description=descriptions[name])
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
        if name != "offline":  # a recording's prompts are the preset's
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
        if name == "offline":
            s.add_argument("--algos", type=_algo_list, default=["sgpo", "grpo"], help="default: sgpo,grpo")
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
            if name == "online":
                s.add_argument(
                    "--algos",
                    type=_algo_list,
                    default=["sgpo", "grpo", "dapo"],
                    help="default: sgpo,grpo,dapo",
                )
            else:
                s.add_argument(
                    "--noise",
                    type=_float_list,
                    default=_float_list(DEFAULT_NOISE),
                    help=f"default: {DEFAULT_NOISE}",
                )
                s.add_argument(
                    "--reference",
                    type=_reference_list,
                    default=["grpo"],
                    help="baselines on the same budget, drawn as reference lines (default: grpo; '' for none)",
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


# --------------------------------------------------------------------------------------------------------
# The plan: which runs, with which exact commands


@dataclass(frozen=True)
class RunSpec:
    name: str
    algo: str
    seed: int
    argv: tuple[str, ...]
    """Arguments after `sgpo` (the command is `sgpo train ...`)."""
    noise: float = 0.0
    config: str | None = None
    """TOML text written to OUT/configs/NAME.toml before the run (its path is in argv)."""

    def identity(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "config": self.config}

    def command(self) -> str:
        return shlex.join(["sgpo", *self.argv])


@dataclass(frozen=True)
class RecordSpec:
    argv: tuple[str, ...]
    path: Path
    """The recorded groups file."""
    folder: Path

    def identity(self) -> dict[str, Any]:
        return {"argv": list(self.argv)}

    def command(self) -> str:
        return shlex.join(["sgpo", *self.argv])


@dataclass
class Study:
    name: str
    out: Path
    runs: list[RunSpec]
    params: dict[str, Any]
    record: RecordSpec | None = None
    budget: int = 0
    steps: int = 0
    batch_groups: int = 16
    notes: list[str] = field(default_factory=list)

    def plan_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "runs": [{"name": r.name, "algo": r.algo, "seed": r.seed, "noise": r.noise} for r in self.runs],
        }


def default_policy() -> Path:
    from sgpo.tasks.tiny import policy_dir

    return policy_dir()


def _toml(doc: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(doc)


def plan_study(args: argparse.Namespace, policy: Path) -> Study:
    """The study's runs and their exact `sgpo train` commands (no side effects)."""
    import tomllib

    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import deep_merge, eval_options_error

    preset = TRAIN_PRESETS[args.preset]
    out = args.out.resolve()
    per_step = preset.batch_groups * preset.group_size
    extra: dict[str, Any] = tomllib.loads(args.config.read_text()) if args.config is not None else {}
    if args.eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1; got {args.eval_every}")
    problem = eval_options_error(getattr(args, "eval_samples", None), getattr(args, "eval_temperature", None))
    if problem:
        raise ValueError(problem)
    notes: list[str] = []
    params: dict[str, Any] = {
        "preset": args.preset,
        "seeds": list(args.seeds),
        "eval_every": args.eval_every,
        "eval_samples": getattr(args, "eval_samples", None),
        "eval_temperature": getattr(args, "eval_temperature", None),
        "policy": str(policy),
        "config": extra,
    }

    def spec(name: str, algo: str, seed: int, steps: int, more: list[str], noise: float = 0.0) -> RunSpec:
        doc = deep_merge(extra, {"judge": {"noise": noise, "noise_seed": seed}}) if noise > 0 else extra
        argv = [
            "train",
            "--preset",
            args.preset,
            "--algo",
            algo,
            "--seed",
            str(seed),
            "--steps",
            str(steps),
            "--eval-every",
            str(args.eval_every),
            *more,
            "--policy",
            str(policy),
        ]
        if getattr(args, "train_levels", None):
            argv += ["--levels", ",".join(map(str, args.train_levels))]
        if getattr(args, "eval_samples", None) is not None:
            argv += ["--eval-samples", str(args.eval_samples)]
        if getattr(args, "eval_temperature", None) is not None:
            argv += ["--eval-temperature", repr(args.eval_temperature)]
        config = _toml(doc) if doc else None
        if config is not None:
            argv += ["--config", str(out / "configs" / f"{name}.toml")]
        argv += ["--run-dir", str(out / "runs" / name)]
        return RunSpec(name, algo, seed, tuple(argv), noise, config)

    if args.study == "offline":
        if args.prompts < 1 or args.epochs < 1:
            raise ValueError("--prompts and --epochs must be >= 1")
        record_dir = out / "offline-record"
        record_path = args.record.resolve() if args.record is not None else record_dir / "groups.jsonl"
        record = None
        if args.record is None:
            record = RecordSpec(
                (
                    "record",
                    "--preset",
                    args.preset,
                    "--out",
                    str(record_path),
                    "--prompts",
                    str(args.prompts),
                    "--seed",
                    str(args.record_seed),
                    "--policy",
                    str(policy),
                    "--run-dir",
                    str(record_dir / "record.d"),
                ),
                record_path,
                record_dir,
            )
        # --epochs 0 (replay until --steps) with exactly epochs x prompts / batch steps: the trainer stops at its
        # step cap having consumed every pass, instead of the launcher stopping it when the replay ends.
        steps = args.steps or math.ceil(args.epochs * args.prompts / preset.batch_groups)
        if (args.epochs * args.prompts) % preset.batch_groups and args.steps is None:
            notes.append(
                f"epochs x prompts = {args.epochs * args.prompts} is not a multiple of {preset.batch_groups} groups"
                f" per step: the last step reads into pass {args.epochs + 1}"
            )
        more = ["--replay", str(record_path), "--epochs", "0"]
        runs = [spec(f"offline-{a}-s{s}", a, s, steps, more) for a in args.algos for s in args.seeds]
        runs = list({r.name: r for r in runs}.values())
        params.update(
            algos=list(args.algos),
            prompts=args.prompts,
            epochs=args.epochs,
            record=str(record_path),
            record_seed=args.record_seed,
            steps=steps,
        )
        return Study("offline", out, runs, params, record, 0, steps, preset.batch_groups, notes)

    budget = args.max_sampled
    if budget < 0:
        raise ValueError(f"--max-sampled must be >= 0; got {budget}")
    if budget == 0 and args.steps is None:
        raise ValueError("--max-sampled 0 (no budget) needs --steps")
    steps = args.steps if args.steps is not None else math.ceil(budget / per_step)
    if steps < 1:
        raise ValueError(f"--steps must be >= 1; got {steps}")
    if budget and steps * per_step < budget:
        notes.append(
            f"--steps {steps} x {per_step} completions per step < budget {budget}: sgpo and grpo stop at the step"
            " cap before the budget, dapo may not: budgets are unequal"
        )
    more = ["--max-sampled", str(budget)] if budget else []
    if args.study == "online":
        runs = [spec(f"{a}-s{s}", a, s, steps, more) for a in args.algos for s in args.seeds]
        params.update(algos=list(args.algos))
    else:
        runs = []
        for p in args.noise:
            name = "sgpo" if p == 0 else f"sgpo-noise{p:g}"
            runs += [spec(f"{name}-s{s}", "sgpo", s, steps, more, noise=p) for s in args.seeds]
        runs += [spec(f"{a}-s{s}", a, s, steps, more) for a in args.reference for s in args.seeds]
        params.update(noise=list(args.noise), reference=list(args.reference))
    params.update(max_sampled=budget, steps=steps)
    runs = list({r.name: r for r in runs}.values())  # a repeated seed or algo runs once
    return Study(args.study, out, runs, params, None, budget, steps, preset.batch_groups, notes)


def train_supports(flag: str) -> bool:
    """Whether `sgpo train` accepts `flag` (so a study fails up front, not nine runs later)."""
    from sgpo.launch import train

    p = argparse.ArgumentParser(add_help=False)
    train.add_arguments(p)
    return any(flag in a.option_strings for a in p._actions)


# --------------------------------------------------------------------------------------------------------
# Running


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, TypeError, ValueError):
        return None


def read_identity(folder: Path) -> dict[str, Any] | None:
    return read_json(folder / "experiment.json")


def pid_running(pid: int | None, needle: str) -> bool:
    """Whether process `pid` is alive and its command line contains `needle` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


def classify(study: Study) -> dict[str, str]:
    """Each run's status: `done` (complete, same command), `todo`, or an error message (a complete run made by
    a different command, or a run still running in a process that outlived its experiment)."""
    from sgpo.launch.aggregate import run_status

    out: dict[str, str] = {}
    for spec in study.runs:
        folder = study.out / "runs" / spec.name
        status = run_status(folder)
        ident = read_identity(folder) if status != "missing" else None
        if status == "complete":
            if ident is None:
                out[spec.name] = "done"  # made outside `sgpo experiment`: trusted as is
            elif ident.get("argv") != list(spec.argv) or ident.get("config") != spec.config:
                out[spec.name] = (
                    f"{folder} holds a complete run made by a different command:\n  was: "
                    f"{shlex.join(['sgpo', *ident.get('argv', [])])}\n  now: {spec.command()}\n"
                    "use another --out, or delete that folder to redo it"
                )
            else:
                out[spec.name] = "done"
        elif status == "incomplete" and ident and pid_running(ident.get("pid"), str(folder)):
            out[spec.name] = f"{folder} is still being trained by pid {ident['pid']}; stop it or wait for it"
        else:
            out[spec.name] = "todo"
    return out


def _fmt_duration(s: float) -> str:
    s = max(0, int(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Tail:
    """New complete JSON lines of a growing file."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        rows = []
        for line in data[:end].splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows


class Follow:
    """A run's progress from its folder: trainer step, completions its steps consumed, last evaluation."""

    def __init__(self, folder: Path, batch_groups: int) -> None:
        self.evals, self.metrics, self.groups = (
            Tail(folder / "eval.jsonl"),
            Tail(folder / "metrics.jsonl"),
            Tail(folder / "groups.jsonl"),
        )
        self.batch_groups = batch_groups
        self.group_sampled: list[int] = []
        self.step, self.reward, self.last_eval = 0, float("nan"), float("nan")
        self.last_change = time.monotonic()

    @property
    def sampled(self) -> int:
        """Completions sampled to make the groups trainer steps 1..step consumed (queue order)."""
        n = min(self.step * self.batch_groups, len(self.group_sampled))
        return self.group_sampled[n - 1] if n > 0 else 0

    def poll(self) -> list[dict[str, Any]]:
        """Update; return the new evaluation records."""
        groups, metrics, new = self.groups.read(), self.metrics.read(), self.evals.read()
        if groups or metrics or new:
            self.last_change = time.monotonic()
        self.group_sampled += [int(g.get("sampled") or 0) for g in groups]
        for m in metrics:
            self.step = max(self.step, int(m.get("step", 0)))
            self.reward = float(m.get("reward_mean", self.reward))
        for e in new:
            self.last_eval = float(e.get("overall", float("nan")))
        return new


class Runner:
    def __init__(
        self,
        study: Study,
        console: Any,
        sgpo: tuple[str, ...] = (sys.executable, "-m", "sgpo.cli"),
        poll_s: float = 1.0,
        stall_timeout: float = 900.0,
    ) -> None:
        """`sgpo`: how to run the CLI (this interpreter by default, same as the console script)."""
        self.study, self.console, self.sgpo, self.poll_s = study, console, tuple(sgpo), poll_s
        self.stall_timeout = stall_timeout
        self.durations: list[float] = []
        self.failed: list[tuple[str, str]] = []
        self._sigterm = False

    # -- environment ----------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SGPO_REDIS_URL"}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _on_sigterm(self, *_: object) -> None:
        self._sigterm = True
        raise KeyboardInterrupt

    def _spawn(self, argv: tuple[str, ...], log_path: Path) -> subprocess.Popen[bytes]:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            # A session of its own: Ctrl-C reaches only this process, which stops the run with one SIGTERM
            # (`sgpo train` treats it as Ctrl-C and shuts its services down cleanly).
            return subprocess.Popen(
                [*self.sgpo, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )

    def _stop(self, proc: subprocess.Popen[bytes], what: str, redo: bool = True) -> None:
        if proc.poll() is not None:
            return
        later = "; it will be redone next time" if redo else ""
        self.console.print(f"[yellow]stopping {what} (pid {proc.pid}){later}...[/]")
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=180)
        except (KeyboardInterrupt, subprocess.TimeoutExpired):
            self.console.print(
                f"[red]not waiting any longer: {what} (pid {proc.pid}) may still be stopping[/]"
            )

    # -- the study --------------------------------------------------------------------------------------
    def execute(self) -> int:
        import fcntl

        study, console = self.study, self.console
        study.out.mkdir(parents=True, exist_ok=True)
        lock = (study.out / ".experiment.lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            console.print(f"[red]error:[/] another `sgpo experiment` is running on {study.out}")
            return 2
        old = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            status = classify(study)
            record = record_status(study, status)
            errors = [v for v in (*status.values(), record) if v not in ("done", "todo")]
            if errors:
                for e in errors:
                    console.print(f"[red]error:[/] {e}", soft_wrap=True, highlight=False)
                return 2
            write_plan(study)
            if study.record is not None and not self.ensure_record(study.record):
                console.print("[red]the recording failed: no offline run can start[/]")
                return 1
            todo = [r for r in study.runs if status[r.name] == "todo"]
            done = len(study.runs) - len(todo)
            console.print(
                f"[bold]{study.name}[/]: {len(study.runs)} runs in {study.out / 'runs'}; "
                f"{done} already complete (skipped), {len(todo)} to run"
            )
            for i, spec in enumerate(todo):
                self.run_one(spec, i, len(todo))
        except KeyboardInterrupt:
            console.print(
                "[yellow]interrupted: run the same command again to continue (complete runs are kept)[/]"
            )
            return 130
        finally:
            signal.signal(signal.SIGTERM, old)
            lock.close()
        if self.failed:
            console.print(f"[red]{len(self.failed)} run(s) failed:[/]")
            for name, log in self.failed:
                console.print(f"  {name}: log {log}")
        return 1 if self.failed else 0

    def ensure_record(self, rec: RecordSpec) -> bool:
        if record_status(self.study, {}) == "done":
            self.console.print(f"recorded groups: {rec.path} (already recorded; skipped)")
            return True
        rec.folder.mkdir(parents=True, exist_ok=True)
        if rec.path.exists():
            rec.path.unlink()  # a partial recording
        if (rec.folder / "record.d").exists():
            shutil.rmtree(rec.folder / "record.d")  # its logs, config and group stats
        log = rec.folder / "record.log"
        self.console.print(f"recording groups from the initial policy: {rec.command()}\n  log: {log}")
        total = int(rec.argv[rec.argv.index("--prompts") + 1])
        tail = Tail(rec.folder / "record.d" / "groups.jsonl")
        count = 0
        t0 = time.monotonic()
        proc = self._spawn(rec.argv, log)
        try:
            while proc.poll() is None:
                time.sleep(self.poll_s)
                new = len(tail.read())
                if new:
                    count += new
                    self.console.print(f"  recorded {count}/{total} groups ({time.monotonic() - t0:.0f}s)")
        except KeyboardInterrupt:
            self._stop(proc, "the recording")
            raise
        if proc.returncode != 0 or not rec.path.is_file():
            self.console.print(
                f"[red]sgpo record exited with {proc.returncode}[/]; log {log}:\n{tail_text(log)}"
            )
            return False
        (rec.folder / "record.json").write_text(
            json.dumps({**rec.identity(), "seconds": time.monotonic() - t0}, indent=2)
        )
        return True

    def run_one(self, spec: RunSpec, index: int, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        study, console = self.study, self.console
        folder = study.out / "runs" / spec.name
        if folder.exists():  # interrupted or crashed: keep it for diagnosis, start afresh
            dest = study.out / "attempts" / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            folder.rename(dest)
            console.print(f"[yellow]{spec.name}: an earlier attempt did not complete; moved it to {dest}[/]")
        folder.mkdir(parents=True)
        if spec.config is not None:
            cfg = study.out / "configs" / f"{spec.name}.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(spec.config)
        log = folder / "train.log"
        ident = {**spec.identity(), "study": study.name, "started": time.time()}
        (folder / "experiment.json").write_text(json.dumps(ident, indent=2))
        console.print(
            f"[bold][{index + 1}/{total}] {spec.name}[/] · started {time.strftime('%H:%M:%S')} · "
            + self._eta(total - index)
        )
        console.print("  " + spec.command(), soft_wrap=True, markup=False, highlight=False)
        console.print(f"  log: {log}", soft_wrap=True, markup=False, highlight=False)
        t0 = time.monotonic()
        proc = self._spawn(spec.argv, log)
        (folder / "experiment.json").write_text(json.dumps({**ident, "pid": proc.pid}, indent=2))
        follow = Follow(folder, study.batch_groups)
        stalled = False
        budget, cap = study.budget, study.steps
        cols = [
            TextColumn(f"  {spec.name}"),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        ]

        def show_evals(printer: Any) -> None:
            for e in follow.poll():
                at = f" · sampled {e['sampled']}" if e.get("sampled") is not None else ""
                accs = " ".join(f"{k}:{v:.2f}" for k, v in e.get("accuracy", {}).items())
                printer.print(
                    f"  {spec.name} eval @ step {e.get('step')}{at}: overall {e.get('overall', float('nan')):.3f}"
                    f" | {accs}",
                    soft_wrap=True,
                    highlight=False,
                )

        try:
            with Progress(*cols, console=console, transient=True, refresh_per_second=1) as progress:
                task = progress.add_task(spec.name, total=1.0, info="starting services...")
                while proc.poll() is None:
                    time.sleep(self.poll_s)
                    show_evals(progress.console)
                    idle = time.monotonic() - follow.last_change
                    if self.stall_timeout and idle > self.stall_timeout:
                        stalled = True
                        progress.console.print(
                            f"  [red]{spec.name} stalled:[/] nothing new in its folder for {idle:.0f}s "
                            f"(step {follow.step}, {len(follow.group_sampled)} groups queued); stopping it"
                        )
                        self._stop(proc, spec.name, redo=False)
                        break
                    frac = follow.step / cap if cap else 0.0
                    if budget:
                        frac = max(frac, min(1.0, follow.sampled / budget))
                    elapsed = time.monotonic() - t0
                    progress.update(
                        task,
                        completed=min(frac, 1.0),
                        info=(
                            f"step {follow.step}/{cap} · sampled {follow.sampled}"
                            + (f"/{budget}" if budget else "")
                            + f" · reward {follow.reward:.3f} · eval {follow.last_eval:.3f} · "
                            + self._eta(total - index, elapsed, frac)
                        ),
                    )
            show_evals(console)
        except KeyboardInterrupt:
            self._stop(proc, spec.name)
            raise
        seconds = time.monotonic() - t0
        from sgpo.launch.aggregate import run_status

        status = run_status(folder)
        if proc.returncode == 0 and status == "complete":
            self.durations.append(seconds)
            console.print(
                f"  [green]{spec.name} done[/] in {_fmt_duration(seconds)}: step {follow.step}, "
                f"sampled {follow.sampled}, final eval {follow.last_eval:.3f}"
            )
        else:
            self.failed.append((spec.name, str(log)))
            why = (
                f"stalled for {self.stall_timeout:.0f}s, then stopped"
                if stalled
                else f"exit {proc.returncode}"
            )
            console.print(
                f"  [red]{spec.name} failed[/] ({why}, {status}) after {_fmt_duration(seconds)}; "
                f"log {log}:\n{tail_text(log)}"
            )

    def _eta(self, remaining: int, elapsed: float = 0.0, frac: float = 0.0) -> str:
        """ETA of the study: remaining runs x mean duration of the runs finished in this invocation (the
        current run's own projection until one has finished)."""
        if self.durations:
            per = sum(self.durations) / len(self.durations)
        elif frac > 0.05:
            per = elapsed / frac
        else:
            return "ETA: after the first run"
        left = max(0.0, per - elapsed) + per * (remaining - 1)
        return f"ETA {_fmt_duration(left)}"


def record_status(study: Study, runs: dict[str, str]) -> str:
    """The offline recording: `done`, `todo` (none, or a partial one), or an error message (recorded by a
    different command, or offline runs already trained on an earlier recording that would be replaced)."""
    rec = study.record
    if rec is None:
        return "done"
    ident = read_json(rec.folder / "record.json")
    if ident is not None and rec.path.is_file():
        if ident.get("argv") != list(rec.argv):
            return (
                f"{rec.folder} holds a recording made by a different command:\n  was: "
                f"{shlex.join(['sgpo', *ident.get('argv', [])])}\n  now: {rec.command()}\n"
                "use another --out, or delete that folder (and the offline runs) to redo it"
            )
        return "done"
    trained = [name for name, s in runs.items() if s == "done"]
    if trained:
        return (
            f"offline runs {', '.join(trained)} were trained on a recording that is gone or incomplete: delete"
            " them too, or use another --out"
        )
    return "todo"


def tail_text(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join("    " + line for line in text[-lines:])


def write_plan(study: Study) -> None:
    """Record the study in OUT/experiment.json (aggregation reads it); other studies' entries are kept."""
    path = study.out / "experiment.json"
    doc = read_json(path) or {}
    doc.setdefault("studies", {})[study.name] = study.plan_json()
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


# --------------------------------------------------------------------------------------------------------
# Entry point


def print_dry_run(study: Study, console: Any) -> None:
    from sgpo.launch.aggregate import run_status

    status = classify(study)
    print(f"# {study.name}: {len(study.runs)} runs, one at a time; folders under {study.out / 'runs'}")
    for note in study.notes:
        print(f"# note: {note}")
    if study.record is not None:
        rs = record_status(study, status)
        tag = {"done": "already recorded: skipped", "todo": "to record"}.get(
            rs, "error: " + rs.splitlines()[0]
        )
        print(f"# record once ({tag})")
        print(study.record.command())
    for spec in study.runs:
        s = status[spec.name]
        folder = study.out / "runs" / spec.name
        tag = (
            "complete: skipped"
            if s == "done"
            else ("error: " + s.splitlines()[0] if s != "todo" else f"to run ({run_status(folder)})")
        )
        print(f"# {spec.name}: {tag}")
        if spec.config is not None:
            print(f"# writes {study.out / 'configs' / (spec.name + '.toml')}:")
            for line in spec.config.strip().splitlines():
                print(f"#   {line}")
        print(spec.command())


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sgpo.launch.aggregate import aggregate

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
    if args.study == "offline" and args.record is not None and not args.record.is_file():
        console.print(f"[red]error:[/] --record {args.record} does not exist")
        return 2
    policy = args.policy.resolve() if args.policy is not None else default_policy()
    try:
        study = plan_study(args, policy)
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
