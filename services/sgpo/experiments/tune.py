"""The tuned comparison, `sgpo experiment tune` (per-algorithm learning rates chosen on validation): planning and the selection rule; no side effects.

Two phases, each a `Study` of jobs the scheduler runs (in parallel with --jobs), resumable like every study:

1. **sweep** (`tune-sweep`): every algorithm x learning rate x tuning seed, `sgpo train --eval-split
   validation` (held-out problems drawn apart from the test split), on the same budget of completions sampled.
2. **final** (`tune`), once every sweep run is complete: each algorithm at its selected learning rate x the
   final seeds on the test split; the controls at SGPO's selected rate (judge noise p, `color_scope =
   all_incorrect`) x the control seeds; a greedy score (`sgpo experiment score --temperature 0`) of every
   final and control run's last checkpoint; and, given a TRL environment, TRL's GRPOTrainer at its own
   selected rate (swept like the others in phase 1, unless --trl-lr fixes it) x the final seeds
   (`sgpo experiment trl-run`, scored on the same test problems).

**Selection rule** (`select_lrs`): for each algorithm, the learning rate with the highest mean over tuning
seeds of the final validation accuracy (overall avg@k of the last evaluation); a learning rate is eligible
only when every tuning seed's run is complete; ties (equal means to 1e-9) go to the smaller learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.experiments.plan import RunSpec, Study, _toml

DEFAULT_ALGOS = ("sgpo", "grpo", "dapo", "drgrpo")
DEFAULT_LRS = (1e-4, 2e-4, 3e-4, 5e-4)
DEFAULT_TUNE_SEEDS = (0, 1)
DEFAULT_FINAL_SEEDS = (0, 1, 2, 3, 4)
DEFAULT_CONTROL_SEEDS = (0, 1, 2)
DEFAULT_NOISE = (0.0, 0.5, 1.0)
DEFAULT_STEPS = 120
DEFAULT_EVAL_EVERY = 20
TIE_EPS = 1e-9


@dataclass(frozen=True)
class TuneOptions:
    out: Path
    algos: Sequence[str] = DEFAULT_ALGOS
    lrs: Sequence[float] = DEFAULT_LRS
    tune_seeds: Sequence[int] = DEFAULT_TUNE_SEEDS
    seeds: Sequence[int] = DEFAULT_FINAL_SEEDS
    control_seeds: Sequence[int] = DEFAULT_CONTROL_SEEDS
    noise: Sequence[float] = DEFAULT_NOISE
    color_scope_control: bool = True
    steps: int = DEFAULT_STEPS
    """Trainer step cap of every run (sweep and final)."""
    max_sampled: int | None = None
    """Budget of completions sampled per run (None: steps x completions per step, so sgpo and grpo run exactly
    `steps` steps and dapo stops when its sampling reaches the same count)."""
    eval_every: int = DEFAULT_EVAL_EVERY
    eval_samples: int | None = None
    eval_temperature: float | None = None
    greedy: bool = True
    """Greedy score of every final and control run's last checkpoint."""
    config: Path | None = None
    device: str = "cpu"
    """cpu, or cuda: generator and trainer of every run on the GPU (fp32), as the first GPU study."""
    preset: str = "tiny"
    train_levels: Sequence[int] | None = None
    trl_python: Path | None = None
    """A python with TRL importable (its own venv): adds the TRL runs (None: no outside baseline)."""
    trl_lr: float | None = None
    """TRL's learning rate (None: GRPO's selected one)."""


@dataclass
class TunePlan:
    sweep: Study
    final: Study | None = None
    selection: dict[str, Any] = field(default_factory=dict)


def lr_tag(lr: float) -> str:
    return f"lr{lr:g}"


def device_config(device: str) -> dict[str, Any]:
    """The run.toml tables that put the generator and trainer of a run on the GPU (fp32)."""
    if device != "cuda":
        return {}
    return {
        "generator": {"device": "cuda", "dtype": "float32"},
        "trainer": {"device": "cuda", "precision": "fp32"},
    }


class _Planner:
    def __init__(self, opts: TuneOptions, policy: Path) -> None:
        import tomllib

        from sgpo.launch.presets import TRAIN_PRESETS
        from sgpo.launch.train import deep_merge, eval_options_error

        self.opts, self.policy = opts, policy
        self.preset = TRAIN_PRESETS[opts.preset]
        self.out = opts.out.resolve()
        self.per_step = self.preset.batch_groups * self.preset.group_size
        if opts.steps < 1 or opts.eval_every < 1:
            raise ValueError("--steps and --eval-every must be >= 1")
        problem = eval_options_error(opts.eval_samples, opts.eval_temperature)
        if problem:
            raise ValueError(problem)
        if not opts.lrs or any(lr <= 0 for lr in opts.lrs):
            raise ValueError(f"learning rates must be > 0; got {list(opts.lrs)}")
        self.budget = opts.max_sampled if opts.max_sampled is not None else opts.steps * self.per_step
        if self.budget < 0:
            raise ValueError(f"--max-sampled must be >= 0; got {self.budget}")
        extra = tomllib.loads(opts.config.read_text()) if opts.config is not None else {}
        self.extra = deep_merge(extra, device_config(opts.device))
        self.deep_merge = deep_merge
        self.params: dict[str, Any] = {
            "preset": opts.preset,
            "policy": str(policy),
            "algos": list(opts.algos),
            "lrs": list(opts.lrs),
            "tune_seeds": list(opts.tune_seeds),
            "seeds": list(opts.seeds),
            "control_seeds": list(opts.control_seeds),
            "noise": list(opts.noise),
            "color_scope_control": opts.color_scope_control,
            "steps": opts.steps,
            "max_sampled": self.budget,
            "eval_every": opts.eval_every,
            "eval_samples": opts.eval_samples,
            "eval_temperature": opts.eval_temperature,
            "device": opts.device,
            "config": self.extra,
            "trl": opts.trl_python is not None,
            "selection_rule": SELECTION_RULE,
        }

    def train(
        self,
        name: str,
        algo: str,
        seed: int,
        lr: float,
        split: str,
        group: str,
        noise: float = 0.0,
        more: dict[str, Any] | None = None,
        tag: str = "",
    ) -> RunSpec:
        opts = self.opts
        doc = self.deep_merge(self.extra, {"trainer": {"lr": lr}})
        if noise > 0:
            doc = self.deep_merge(doc, {"judge": {"noise": noise, "noise_seed": seed}})
        if more:
            doc = self.deep_merge(doc, more)
        argv = [
            "train", "--preset", opts.preset, "--algo", algo, "--seed", str(seed), "--steps", str(opts.steps),
            "--eval-every", str(opts.eval_every), "--eval-split", split,
        ]  # fmt: skip
        if self.budget:
            argv += ["--max-sampled", str(self.budget)]
        argv += ["--policy", str(self.policy)]
        if opts.train_levels:
            argv += ["--levels", ",".join(map(str, opts.train_levels))]
        if opts.eval_samples is not None:
            argv += ["--eval-samples", str(opts.eval_samples)]
        if opts.eval_temperature is not None:
            argv += ["--eval-temperature", repr(opts.eval_temperature)]
        argv += ["--config", str(self.out / "configs" / f"{name}.toml")]
        argv += ["--run-dir", str(self.out / "runs" / name)]
        return RunSpec(name, algo, seed, tuple(argv), noise, _toml(doc), lr=lr, group=group, tag=tag)

    def greedy(self, run: RunSpec) -> RunSpec:
        name = f"greedy-{run.name}"
        argv = (
            "experiment", "score", "--run", str(self.out / "runs" / run.name), "--temperature", "0",
            "--device", self.opts.device, "--out", str(self.out / "runs" / name),
        )  # fmt: skip
        return RunSpec(
            name, run.algo, run.seed, argv, run.noise, None, lr=run.lr, group="greedy", tag=run.tag,
            kind="score", after=(run.name,),
        )  # fmt: skip

    def trl(self, seed: int, lr: float, split: str = "test") -> RunSpec:
        opts = self.opts
        name = f"{'val-' if split == 'validation' else ''}trl-{lr_tag(lr)}-s{seed}"
        argv = [
            "experiment", "trl-run", "--out", str(self.out / "runs" / name), "--seed", str(seed),
            "--lr", repr(lr), "--steps", str(opts.steps), "--eval-every", str(opts.eval_every),
            "--eval-split", split, "--device", opts.device, "--policy", str(self.policy),
            "--eval-samples", str(opts.eval_samples or self.preset.eval_samples),
            "--eval-temperature", repr(
                self.preset.eval_temperature if opts.eval_temperature is None else opts.eval_temperature
            ),
        ]  # fmt: skip
        if opts.train_levels:
            argv += ["--levels", ",".join(map(str, opts.train_levels))]
        config = _toml(self.extra) if self.extra else None
        if config is not None:
            argv += ["--config", str(self.out / "configs" / f"{name}.toml")]
        program = (str(opts.trl_python), "-m", "sgpo.cli")
        group = "sweep" if split == "validation" else "trl"
        return RunSpec(
            name, "trl", seed, tuple(argv), 0.0, config, lr=lr, group=group, kind="trl", program=program
        )

    def study(self, name: str, runs: list[RunSpec], params: dict[str, Any]) -> Study:
        runs = list({r.name: r for r in runs}.values())  # a run two parts share runs once
        steps = self.opts.steps
        return Study(
            name,
            self.out,
            runs,
            params,
            None,
            self.budget,
            steps,
            self.preset.batch_groups,
            [],
            merge_plan=True,
        )


SELECTION_RULE = (
    "per algorithm, the learning rate with the highest mean over tuning seeds of the final validation accuracy "
    "(overall, last evaluation); eligible only when every tuning seed's run is complete; ties (to 1e-9) go to "
    "the smaller learning rate"
)


def plan_sweep(opts: TuneOptions, policy: Path) -> Study:
    p = _Planner(opts, policy)
    runs = [
        p.train(f"val-{a}-{lr_tag(lr)}-s{s}", a, s, lr, "validation", "sweep")
        for a in opts.algos
        for lr in opts.lrs
        for s in opts.tune_seeds
    ]
    if opts.trl_python is not None and opts.trl_lr is None:  # TRL's own best rate, from the same sweep
        runs += [p.trl(s, lr, "validation") for lr in opts.lrs for s in opts.tune_seeds]
    return p.study("tune-sweep", runs, p.params)


def swept_algos(opts: TuneOptions) -> list[str]:
    """The algorithms the sweep selects a rate for (TRL's GRPO too, given a TRL python and no --trl-lr)."""
    return [*opts.algos, *(["trl"] if opts.trl_python is not None and opts.trl_lr is None else [])]


def select_lrs(
    finals: dict[tuple[str, float], list[float]], algos: Sequence[str], lrs: Sequence[float], n_seeds: int
) -> dict[str, Any]:
    """The selection rule (module docstring) over `finals`: (algo, lr) -> the final validation accuracies of
    its complete runs. Returns {algo: {"lr", "mean", "table": {lr: {"mean", "n"}}}} or, for an algorithm with
    no eligible lr, {"lr": None, "reason"}."""
    out: dict[str, Any] = {}
    for a in algos:
        table: dict[str, Any] = {}
        best: tuple[float, float] | None = None  # (mean, lr)
        for lr in sorted(lrs):
            vals = finals.get((a, lr), [])
            mean = sum(vals) / len(vals) if vals else None
            table[f"{lr:g}"] = {"mean": mean, "n": len(vals), "values": vals}
            if mean is None or len(vals) < n_seeds:
                continue
            if best is None or mean > best[0] + TIE_EPS:  # ascending lr: a tie keeps the smaller one
                best = (mean, lr)
        if best is None:
            out[a] = {"lr": None, "mean": None, "table": table, "reason": "no learning rate with every seed"}
        else:
            out[a] = {"lr": best[1], "mean": best[0], "table": table}
    return out


def sweep_finals(sweep: Study) -> dict[tuple[str, float], list[float]]:
    """(algo, lr) -> final overall validation accuracy of each complete sweep run."""
    from sgpo.experiments.state import run_status
    from sgpo.experiments.stats import load_run

    out: dict[tuple[str, float], list[float]] = {}
    for r in sweep.runs:
        folder = sweep.out / "runs" / r.name
        if run_status(folder) != "complete":
            continue
        data = load_run(folder, r.name)
        if data.evals and r.lr is not None:
            out.setdefault((r.algo, r.lr), []).append(data.final.overall)
    return out


def plan_final(opts: TuneOptions, policy: Path, selection: dict[str, Any]) -> Study:
    """The final phase at the selected learning rates (algorithms without one are left out, with a note)."""
    p = _Planner(opts, policy)
    runs: list[RunSpec] = []
    notes = []
    lr_of = {a: s["lr"] for a, s in selection.items() if s.get("lr") is not None}
    for a in opts.algos:
        if a not in lr_of:
            notes.append(f"{a}: no selected learning rate; left out")
            continue
        runs += [p.train(f"{a}-{lr_tag(lr_of[a])}-s{s}", a, s, lr_of[a], "test", "final") for s in opts.seeds]
    controls: list[RunSpec] = []
    if "sgpo" in lr_of:
        lr = lr_of["sgpo"]
        for noise in opts.noise:
            for s in opts.control_seeds:
                if noise == 0:  # plain sgpo at its rate: the final run of that seed
                    controls.append(p.train(f"sgpo-{lr_tag(lr)}-s{s}", "sgpo", s, lr, "test", "final"))
                else:
                    controls.append(
                        p.train(
                            f"sgpo-{lr_tag(lr)}-noise{noise:g}-s{s}", "sgpo", s, lr, "test", "control",
                            noise=noise, tag=f"p={noise:g}",
                        )
                    )  # fmt: skip
        if opts.color_scope_control:
            controls += [
                p.train(
                    f"sgpo-{lr_tag(lr)}-allinc-s{s}", "sgpo", s, lr, "test", "control",
                    more={"algo": {"color_scope": "all_incorrect"}}, tag="all_incorrect",
                )
                for s in opts.control_seeds
            ]  # fmt: skip
    runs += controls
    runs = list({r.name: r for r in runs}.values())
    if opts.trl_python is not None:
        trl_lr = opts.trl_lr or lr_of.get("trl")
        if trl_lr is None:
            notes.append("trl: no learning rate selected for TRL's GRPO and no --trl-lr; left out")
        else:
            runs += [p.trl(s, trl_lr) for s in opts.seeds]
    if opts.greedy:
        runs += [p.greedy(r) for r in runs if r.kind in ("train", "trl")]
    study = p.study("tune", runs, {**p.params, "selection": {a: s.get("lr") for a, s in selection.items()}})
    study.notes = notes
    return study


def smoke_estimate(seconds_per_step: float, opts: TuneOptions, jobs: int) -> dict[str, Any]:
    """Run-steps of the full study and the hours they take at `seconds_per_step` (one run alone) over `jobs`
    parallel runs (ideal sharing, so a lower bound when the runs share too few cores)."""
    n_sweep = len(opts.algos) * len(opts.lrs) * len(opts.tune_seeds)
    n_final = len(opts.algos) * len(opts.seeds)
    n_control = len([p for p in opts.noise if p > 0]) * len(opts.control_seeds) + (
        len(opts.control_seeds) if opts.color_scope_control else 0
    )
    run_steps = (n_sweep + n_final + n_control) * opts.steps
    return {
        "runs": n_sweep + n_final + n_control,
        "run_steps": run_steps,
        "hours_one_at_a_time": run_steps * seconds_per_step / 3600,
        "hours_parallel": math.ceil(run_steps / max(1, jobs)) * seconds_per_step / 3600,
    }
