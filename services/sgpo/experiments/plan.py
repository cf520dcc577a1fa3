"""The plan of a study: its runs and the exact `sgpo train` (and `sgpo record`) command of each; no side
effects."""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.experiments.studies import STUDIES

DEFAULT_BUDGET = 12800  # completions sampled: 100 trainer steps of the tiny preset (16 groups x 8) for grpo
DEFAULT_EVAL_EVERY = 10
DEFAULT_NOISE = (0.0, 0.25, 0.5, 1.0)
DEFAULT_OFFLINE_PROMPTS = 256
DEFAULT_EPOCHS = 4


@dataclass(frozen=True)
class StudyOptions:
    """What a study is asked for (the options of `sgpo experiment STUDY`; fields a design does not use are
    ignored)."""

    study: str
    out: Path
    seeds: Sequence[int] = (0, 1, 2)
    eval_every: int = DEFAULT_EVAL_EVERY
    eval_samples: int | None = None
    eval_temperature: float | None = None
    config: Path | None = None
    preset: str = "tiny"
    train_levels: Sequence[int] | None = None
    steps: int | None = None
    algos: Sequence[str] = ()
    """compare and replay designs: the algorithms (default: the study's)."""
    max_sampled: int = DEFAULT_BUDGET
    noise: Sequence[float] = DEFAULT_NOISE
    reference: Sequence[str] | None = None
    """sweep design: baselines (None: the study's)."""
    prompts: int = DEFAULT_OFFLINE_PROMPTS
    epochs: int = DEFAULT_EPOCHS
    record_seed: int = 0
    record: Path | None = None
    """replay design: an existing recorded file instead of recording one."""


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
    lr: float | None = None
    group: str = ""
    """The part of its study (the tuned study: sweep, final, control, greedy, trl)."""
    tag: str = ""
    """What a control changes (p=0.5, all_incorrect)."""
    kind: str = "train"
    """train (`sgpo train`), score (`sgpo experiment score`) or trl (`sgpo experiment trl-run`)."""
    after: tuple[str, ...] = ()
    """Runs of the same study that must be complete before this one starts."""
    program: tuple[str, ...] = ()
    """The interpreter and module to run argv with (empty: the scheduler's own `sgpo`)."""

    def identity(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "config": self.config}

    def command(self) -> str:
        return shlex.join([*(self.program or ("sgpo",)), *self.argv])


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
    merge_plan: bool = False
    """OUT/experiment.json keeps the runs earlier invocations planned for this study (the tuned study, run in
    parts: some algorithms per session) instead of replacing them."""

    def plan_json(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "runs": [
                {
                    "name": r.name,
                    "algo": r.algo,
                    "seed": r.seed,
                    "noise": r.noise,
                    **({"lr": r.lr, "group": r.group, "tag": r.tag, "kind": r.kind} if r.group else {}),
                }
                for r in self.runs
            ],
        }


def default_policy() -> Path:
    from sgpo.tasks.tiny import policy_dir

    return policy_dir()


def _toml(doc: dict[str, Any]) -> str:
    import tomli_w

    return tomli_w.dumps(doc)


def plan_study(opts: StudyOptions, policy: Path) -> Study:
    """The study's runs and their exact `sgpo train` commands (no side effects)."""
    import tomllib

    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import deep_merge, eval_options_error

    definition = STUDIES[opts.study]
    algos = list(opts.algos or definition.algos)
    preset = TRAIN_PRESETS[opts.preset]
    out = opts.out.resolve()
    per_step = preset.batch_groups * preset.group_size
    extra: dict[str, Any] = tomllib.loads(opts.config.read_text()) if opts.config is not None else {}
    if opts.eval_every < 1:
        raise ValueError(f"--eval-every must be >= 1; got {opts.eval_every}")
    problem = eval_options_error(opts.eval_samples, opts.eval_temperature)
    if problem:
        raise ValueError(problem)
    notes: list[str] = []
    params: dict[str, Any] = {
        "preset": opts.preset,
        "seeds": list(opts.seeds),
        "eval_every": opts.eval_every,
        "eval_samples": opts.eval_samples,
        "eval_temperature": opts.eval_temperature,
        "policy": str(policy),
        "config": extra,
    }

    def spec(name: str, algo: str, seed: int, steps: int, more: list[str], noise: float = 0.0) -> RunSpec:
        doc = deep_merge(extra, {"judge": {"noise": noise, "noise_seed": seed}}) if noise > 0 else extra
        argv = [
            "train",
            "--preset",
            opts.preset,
            "--algo",
            algo,
            "--seed",
            str(seed),
            "--steps",
            str(steps),
            "--eval-every",
            str(opts.eval_every),
            *more,
            "--policy",
            str(policy),
        ]
        if opts.train_levels:
            argv += ["--levels", ",".join(map(str, opts.train_levels))]
        if opts.eval_samples is not None:
            argv += ["--eval-samples", str(opts.eval_samples)]
        if opts.eval_temperature is not None:
            argv += ["--eval-temperature", repr(opts.eval_temperature)]
        config = _toml(doc) if doc else None
        if config is not None:
            argv += ["--config", str(out / "configs" / f"{name}.toml")]
        argv += ["--run-dir", str(out / "runs" / name)]
        return RunSpec(name, algo, seed, tuple(argv), noise, config)

    if definition.design == "replay":
        if opts.prompts < 1 or opts.epochs < 1:
            raise ValueError("--prompts and --epochs must be >= 1")
        record_dir = out / "offline-record"
        record_path = opts.record.resolve() if opts.record is not None else record_dir / "groups.jsonl"
        record = None
        if opts.record is None:
            record = RecordSpec(
                (
                    "record",
                    "--preset",
                    opts.preset,
                    "--out",
                    str(record_path),
                    "--prompts",
                    str(opts.prompts),
                    "--seed",
                    str(opts.record_seed),
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
        steps = opts.steps or math.ceil(opts.epochs * opts.prompts / preset.batch_groups)
        if (opts.epochs * opts.prompts) % preset.batch_groups and opts.steps is None:
            notes.append(
                f"epochs x prompts = {opts.epochs * opts.prompts} is not a multiple of {preset.batch_groups} groups"
                f" per step: the last step reads into pass {opts.epochs + 1}"
            )
        more = ["--replay", str(record_path), "--epochs", "0"]
        runs = [spec(f"offline-{a}-s{s}", a, s, steps, more) for a in algos for s in opts.seeds]
        runs = list({r.name: r for r in runs}.values())
        params.update(
            algos=list(algos),
            prompts=opts.prompts,
            epochs=opts.epochs,
            record=str(record_path),
            record_seed=opts.record_seed,
            steps=steps,
        )
        return Study(opts.study, out, runs, params, record, 0, steps, preset.batch_groups, notes)

    budget = opts.max_sampled
    if budget < 0:
        raise ValueError(f"--max-sampled must be >= 0; got {budget}")
    if budget == 0 and opts.steps is None:
        raise ValueError("--max-sampled 0 (no budget) needs --steps")
    steps = opts.steps if opts.steps is not None else math.ceil(budget / per_step)
    if steps < 1:
        raise ValueError(f"--steps must be >= 1; got {steps}")
    if budget and steps * per_step < budget:
        notes.append(
            f"--steps {steps} x {per_step} completions per step < budget {budget}: sgpo and grpo stop at the step"
            " cap before the budget, dapo may not: budgets are unequal"
        )
    more = ["--max-sampled", str(budget)] if budget else []
    if definition.design == "compare":
        runs = [spec(f"{a}-s{s}", a, s, steps, more) for a in algos for s in opts.seeds]
        params.update(algos=list(algos))
    else:  # sweep: the focus algorithm at each noise level, plus the references
        reference = list(definition.reference if opts.reference is None else opts.reference)
        runs = []
        for p in opts.noise:
            focus = definition.focus
            name = focus if p == 0 else f"{focus}-noise{p:g}"
            runs += [spec(f"{name}-s{s}", focus, s, steps, more, noise=p) for s in opts.seeds]
        runs += [spec(f"{a}-s{s}", a, s, steps, more) for a in reference for s in opts.seeds]
        params.update(noise=list(opts.noise), reference=reference)
    params.update(max_sampled=budget, steps=steps)
    runs = list({r.name: r for r in runs}.values())  # a repeated seed or algo runs once
    return Study(opts.study, out, runs, params, None, budget, steps, preset.batch_groups, notes)
