"""`sgpo runs compare DIR...`: any run folders side by side, without a study plan.

Each folder is read with the study loader (`sgpo.experiments.stats.load_run`: run.toml, eval.jsonl,
groups.jsonl, metrics.jsonl), so a run compares exactly as it would inside `sgpo experiment`. Out come two
tables (a summary per run; the last held-out accuracy by level) and two figures: held-out accuracy against
trainer step and against completions sampled, and the all-negative and colored fractions of the groups each
step trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sgpo.common.jsonl import read_jsonl
from sgpo.experiments.report import Table, _save, fmt_num
from sgpo.experiments.stats import RunData, level_key, load_run, rolling_mean


class CompareError(ValueError):
    """A folder that is not a run folder, or nothing to compare; the message says what to pass."""


@dataclass
class ComparedRun:
    data: RunData
    colored: list[tuple[int, float]]
    """(trainer step, fraction of the step's groups that were colored)."""
    steps: int


def load_runs(run_dirs: list[Path]) -> list[ComparedRun]:
    if not run_dirs:
        raise CompareError("no run folders given; pass one or more folders written by `sgpo train`")
    names = _names(run_dirs)
    out = []
    for d, name in zip(run_dirs, names, strict=True):
        if not (d / "run.toml").is_file():
            raise CompareError(f"{d} is not a run folder (no run.toml); pass folders written by `sgpo train`")
        data = load_run(d, name)
        metrics = read_jsonl(d / "metrics.jsonl")
        by_step = {int(m["step"]): m for m in metrics if "step" in m}  # a resumed step: its last line
        colored = sorted(
            (s, float(m["frac_colored"])) for s, m in by_step.items() if m.get("frac_colored") is not None
        )
        out.append(ComparedRun(data, colored, max(by_step, default=0)))
    return out


def _names(run_dirs: list[Path]) -> list[str]:
    """Folder names, with their parent's name where two folders share a name."""
    names = [d.resolve().name for d in run_dirs]
    return [
        f"{d.resolve().parent.name}/{n}" if names.count(n) > 1 else n
        for d, n in zip(run_dirs, names, strict=True)
    ]


def _mean(points: list[tuple[int, float]]) -> float | None:
    return sum(v for _, v in points) / len(points) if points else None


def compare_tables(runs: list[ComparedRun]) -> list[Table]:
    rows = []
    for r in runs:
        d = r.data
        first, last = (d.evals[0], d.evals[-1]) if d.evals else (None, None)
        best = max(d.evals, key=lambda e: e.overall) if d.evals else None
        rows.append(
            [
                d.name,
                d.algo,
                str(d.seed),
                str(r.steps),
                str(last.sampled) if last else "—",
                fmt_num(first.overall if first else None),
                fmt_num(last.overall if last else None),
                fmt_num(last.overall - first.overall if first and last else None, sign=True),
                f"{fmt_num(best.overall)} @ {best.step}" if best else "—",
                fmt_num(_mean(d.all_negative), 2),
                fmt_num(_mean(r.colored), 2),
            ]
        )
    summary = Table(
        "Runs",
        [
            "run",
            "algo",
            "seed",
            "steps",
            "sampled",
            "held-out first",
            "held-out last",
            "change",
            "best @ step",
            "all-negative",
            "colored",
        ],
        rows,
        "held-out: overall accuracy of the first and last evaluation (eval.jsonl); sampled: completions sampled "
        "up to the last evaluated step; all-negative and colored: mean fraction of the groups each step trained on.",
    )
    levels = sorted({lv for r in runs for e in r.data.evals[-1:] for lv in e.accuracy}, key=level_key)
    by_level = Table(
        "Held-out accuracy by number of steps, last evaluation",
        ["steps", *(r.data.name for r in runs)],
        [
            [lv, *(fmt_num(r.data.final.accuracy.get(lv) if r.data.evals else None) for r in runs)]
            for lv in levels
        ],
    )
    return [summary, by_level]


def plot_compare(runs: list[ComparedRun], out: Path, window: int = 5) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for i, r in enumerate(runs):
        c = colors[i % len(colors)]
        for ax, x in zip(axes, ("step", "sampled"), strict=True):
            pts = r.data.curve(x)
            if pts:
                scale = 1000.0 if x == "sampled" else 1.0
                ax.plot(
                    [p[0] / scale for p in pts], [p[1] for p in pts], "o-", color=c, ms=3, label=r.data.name
                )
    axes[0].set_xlabel("trainer step")
    axes[1].set_xlabel("completions sampled (thousands)")
    axes[0].set_ylabel("held-out accuracy (overall)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle("Held-out accuracy", fontsize=10)
    paths = [_save(fig, out / "compare_accuracy.png")]

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for i, r in enumerate(runs):
        c = colors[i % len(colors)]
        for ax, fractions in zip(axes, (r.data.all_negative, r.colored), strict=True):
            smooth = rolling_mean([(float(s), v) for s, v in fractions], window)
            if smooth:
                ax.plot([p[0] for p in smooth], [p[1] for p in smooth], color=c, label=r.data.name)
    axes[0].set_title(f"all-negative fraction (rolling mean of {window} steps)", fontsize=9)
    axes[1].set_title(f"colored fraction (rolling mean of {window} steps)", fontsize=9)
    for ax in axes:
        ax.set_xlabel("trainer step")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    paths.append(_save(fig, out / "compare_groups.png"))
    return paths


def compare(run_dirs: list[Path], out: Path | None) -> tuple[list[Table], list[Path], list[ComparedRun]]:
    """Tables for `run_dirs`, and the figures under `out` (None: no figures)."""
    runs = load_runs(run_dirs)
    tables = compare_tables(runs)
    pngs = plot_compare(runs, out) if out is not None else []
    return tables, pngs, runs
