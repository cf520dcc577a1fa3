"""`sgpo simulate`: the paper's stylized model — GRPO vs SGPO learning curves.

A policy makes K sequential binary step choices; step k is right with probability sigmoid(theta_k). A response
is correct iff all K steps are, and ends at its first wrong step (later choices cannot change its reward, so
dropping them only removes variance from the gradient). Each update samples `groups` groups of G responses; rewards
and advantages come from the same `sgpo.core` functions the services use (the judge's first error is the exact
first wrong step, rts in steps); the update is plain REINFORCE with those advantages: theta += lr * mean_i A_i *
grad log pi(y_i). We count updates until the success probability prod_k sigmoid(theta_k) reaches 50% and 90%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sgpo.core import AlgoConfig, StepJudgement, get_algorithm
from sgpo.core.types import VerdictStatus

SimAlgo = Literal["grpo", "sgpo"]


@dataclass(frozen=True)
class SimConfig:
    k_values: tuple[int, ...] = (2, 4)
    group_size: int = 8
    groups_per_update: int = 4
    initial_success: float = 0.02
    lr: float = 0.2
    max_updates: int = 3000
    seeds: int = 20
    targets: tuple[float, ...] = (0.5, 0.9)


def success_probability(theta: list[float]) -> float:
    return math.prod(1.0 / (1.0 + math.exp(-t)) for t in theta)


def run_curve(algo: SimAlgo, k: int, seed: int, cfg: SimConfig) -> list[float]:
    """Success probability after each update (index 0 = before training), until 90%... or max_updates."""
    import numpy as np

    rng = np.random.default_rng(seed)
    algorithm = get_algorithm(AlgoConfig(algo=algo, group_size=cfg.group_size, rts_unit="steps"))
    step_texts = tuple(f"step {i}" for i in range(k))  # rts in steps: only their number matters
    p_step = cfg.initial_success ** (1.0 / k)
    theta = np.full(k, math.log(p_step / (1.0 - p_step)))
    curve = [success_probability(theta.tolist())]
    top = max(cfg.targets)
    for _ in range(cfg.max_updates):
        p = 1.0 / (1.0 + np.exp(-theta))
        n = cfg.groups_per_update * cfg.group_size
        steps_right = rng.random((n, k)) < p  # only the prefix up to the first wrong step is ever used
        first_error = np.where(steps_right.all(axis=1), -1, np.argmin(steps_right, axis=1))
        grad = np.zeros(k)
        for g in range(cfg.groups_per_update):
            errs = first_error[g * cfg.group_size : (g + 1) * cfg.group_size].tolist()
            statuses: list[VerdictStatus] = ["correct" if e == -1 else "wrong" for e in errs]
            judgements = [None if e == -1 else StepJudgement("ok", step_texts, e) for e in errs]
            scores = algorithm.score(statuses, judgements)
            for e, a in zip(errs, scores.advantages, strict=True):
                if a == 0.0:
                    continue
                last = k if e == -1 else e  # steps [0, last) right, step `last` wrong (if any)
                grad[:last] += a * (1.0 - p[:last])
                if e != -1:
                    grad[e] -= a * p[e]
        theta += cfg.lr * grad / n
        curve.append(success_probability(theta.tolist()))
        if curve[-1] >= top:
            break
    return curve


def updates_to_reach(curve: list[float], target: float) -> int | None:
    return next((i for i, s in enumerate(curve) if s >= target), None)


def simulate(cfg: SimConfig, out: Path) -> list[dict[str, float | int | bool]]:
    """Run every (K, algorithm, seed) curve of `cfg`; print the table of updates to reach each target, write
    simulate.json and simulate.png into `out`; returns the table's rows."""
    import json

    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    console = Console()
    algos: tuple[SimAlgo, ...] = ("grpo", "sgpo")
    curves: dict[tuple[int, str], list[list[float]]] = {}
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task("simulating", total=len(cfg.k_values) * len(algos) * cfg.seeds)
        for k in cfg.k_values:
            for algo in algos:
                for seed in range(cfg.seeds):
                    progress.update(task, description=f"K={k} {algo} seed {seed}")
                    curves.setdefault((k, algo), []).append(run_curve(algo, k, seed, cfg))
                    progress.advance(task)

    table = Table(
        title=f"Updates to reach success, mean over {cfg.seeds} seeds",
        min_width=64,
        caption=f"G={cfg.group_size}, {cfg.groups_per_update} groups/update, start {cfg.initial_success:.0%}, lr {cfg.lr}",
    )
    for col in ("K", "target", "GRPO", "SGPO", "GRPO/SGPO"):
        table.add_column(col, justify="right")
    results = []
    for k in cfg.k_values:
        for target in cfg.targets:
            means = {}
            for algo in algos:
                reached = [updates_to_reach(c, target) for c in curves[(k, algo)]]
                # A run that never reached the target counts as max_updates (a lower bound; flagged with ">").
                vals = [cfg.max_updates if r is None else r for r in reached]
                means[algo] = (sum(vals) / len(vals), any(r is None for r in reached))
            ratio = means["grpo"][0] / means["sgpo"][0]
            fmt = {a: f"{'>' if m[1] else ''}{m[0]:.0f}" for a, m in means.items()}
            table.add_row(str(k), f"{target:.0%}", fmt["grpo"], fmt["sgpo"], f"{ratio:.2f}x")
            results.append(
                {
                    "k": k,
                    "target": target,
                    "grpo_updates": means["grpo"][0],
                    "sgpo_updates": means["sgpo"][0],
                    "grpo_censored": means["grpo"][1],
                    "sgpo_censored": means["sgpo"][1],
                    "ratio": ratio,
                }
            )
    console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "simulate.json").write_text(json.dumps({"config": cfg.__dict__, "results": results}, indent=2))
    png = plot_curves(curves, cfg, out / "simulate.png")
    console.print(f"wrote {png} and {out / 'simulate.json'}")
    return results


def plot_curves(curves: dict[tuple[int, str], list[list[float]]], cfg: SimConfig, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, len(cfg.k_values), figsize=(5 * len(cfg.k_values), 3.6), squeeze=False)
    for ax, k in zip(axes[0], cfg.k_values, strict=True):
        for algo, color in (("grpo", "tab:blue"), ("sgpo", "tab:red")):
            runs = curves[(k, algo)]
            length = max(len(c) for c in runs)
            padded = np.array(
                [c + [c[-1]] * (length - len(c)) for c in runs]
            )  # a finished run stays at its end
            mean, std = padded.mean(0), padded.std(0)
            x = np.arange(length)
            ax.plot(x, mean, color=color, label=algo.upper())
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
        for t in cfg.targets:
            ax.axhline(t, color="gray", lw=0.6, ls=":")
        ax.set(
            title=f"K = {k} steps, G = {cfg.group_size}",
            xlabel="update",
            ylabel="success probability",
            ylim=(0, 1),
        )
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
