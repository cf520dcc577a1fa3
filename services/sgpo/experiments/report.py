"""A study's report: results.json, tables.md (rich and markdown tables from the same rows) and PNG plots,
from the run folders and the plans in OUT/experiment.json. What is compared comes from the study's
definition (`sgpo.experiments.studies`); the statistics are `sgpo.experiments.stats`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgpo.experiments.state import run_status
from sgpo.experiments.stats import (
    TARGET_RATIO,
    RunData,
    all_negative_band,
    area_mean,
    at_budgets,
    by_algo,
    curves_json,
    final_stats,
    fmt_target,
    level_key,
    load_run,
    matched_budgets,
    mean_std,
    target_metric,
)
from sgpo.experiments.studies import ALGO_COLORS, STUDIES


@dataclass
class StudyPlan:
    """What a study is made of (written by `sgpo experiment STUDY` into OUT/experiment.json)."""

    name: str
    runs: list[dict[str, Any]]
    params: dict[str, Any]


def load_plans(out: Path) -> dict[str, StudyPlan]:
    path = out / "experiment.json"
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    return {
        name: StudyPlan(name, s.get("runs", []), s.get("params", {}))
        for name, s in doc.get("studies", {}).items()
    }


def load_complete(
    out: Path, specs: list[dict[str, Any]]
) -> tuple[list[tuple[dict[str, Any], RunData]], list[dict[str, Any]]]:
    """(plan entry, run data) of the complete runs among `specs` that have an evaluation; the others with
    their status (incomplete, unreadable, or complete without an evaluation)."""
    done, missing = [], []
    for spec in specs:
        run_dir = out / "runs" / spec["name"]
        status = run_status(run_dir)
        if status != "complete":
            missing.append({"name": spec["name"], "status": status, "folder": str(run_dir)})
            continue
        try:
            data = load_run(run_dir, spec["name"])
        except (OSError, ValueError, KeyError) as e:
            missing.append({"name": spec["name"], "status": f"unreadable: {e}"})
            continue
        if not data.evals:
            missing.append({"name": spec["name"], "status": "complete but no evaluation"})
            continue
        done.append((spec, data))
    return done, missing


def collect(out: Path, plan: StudyPlan) -> tuple[list[RunData], list[dict[str, Any]]]:
    """The plan's complete runs, and the others with their status."""
    done, missing = load_complete(out, plan.runs)
    for spec, data in done:
        data.noise = float(spec.get("noise", data.noise))
    return [data for _, data in done], missing


def aggregate_study(
    plan: StudyPlan,
    runs: list[RunData],
    missing: list[dict[str, Any]],
    levels: Sequence[str],
    budgets: Sequence[float] | None = None,
    window: int = 5,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "params": plan.params,
        "planned": len(plan.runs),
        "complete": len(runs),
        "missing": missing,
        "runs": {
            r.name: {
                "algo": r.algo,
                "seed": r.seed,
                "noise": r.noise,
                "final_step": r.final.step,
                "final_sampled": r.final.sampled,
                "final_overall": r.final.overall,
                "sampled_source": r.sampled_source,
                "eval_version_span": r.eval_version_span,
            }
            for r in runs
        },
    }
    definition = STUDIES[plan.name]
    groups = by_algo(runs)
    if definition.design == "sweep":
        sgpo = groups.pop(definition.focus, [])
        ref = [r for rs in groups.values() for r in rs]
        grpo = groups.get(definition.baseline, [])
        levels_p = sorted({r.noise for r in sgpo})
        res["reference"] = {a: final_stats(rs, levels) for a, rs in by_algo(ref).items()}
        res["by_noise"] = {}
        for p in levels_p:
            rs = [r for r in sgpo if r.noise == p]
            entry = final_stats(rs, levels)
            entry["curves"] = curves_json(rs, levels, ("step",))
            entry["target_steps"] = target_metric(rs, grpo, "step")
            res["by_noise"][f"{p:g}"] = entry
        res["reference_curves"] = {a: curves_json(rs, levels, ("step",)) for a, rs in by_algo(ref).items()}
        return res
    axes = ("step",) if definition.design == "replay" else ("step", "sampled")
    res["final"] = {a: final_stats(rs, levels) for a, rs in groups.items()}
    res["curves"] = {a: curves_json(rs, levels, axes) for a, rs in groups.items()}
    res["all_negative"] = {a: all_negative_band(rs, window) for a, rs in groups.items()}
    focus, baseline = definition.focus, definition.baseline
    sgpo, grpo = groups.get(focus, []), groups.get(baseline, [])
    contrast = definition.contrast
    dapo = groups.get(contrast, []) if contrast else []
    res["target"] = {x: target_metric(sgpo, grpo, x) for x in axes}
    if definition.design != "replay":
        bs = matched_budgets(runs, budgets)
        res["matched_budgets"] = {"budgets": bs, **{a: at_budgets(rs, bs) for a, rs in groups.items()}}
        if sgpo and dapo:
            top = min(r.final.sampled for r in [*sgpo, *dapo])
            auc = {
                a: mean_std(
                    v for r in rs if (v := area_mean(r.curve("sampled"), 0.0, top)) is not None
                ).json()
                for a, rs in ((focus, sgpo), (contrast, dapo))
            }
            res[f"{focus}_vs_{contrast}"] = {
                "focus": focus,
                "contrast": contrast,
                "range": [0, top],
                "mean_accuracy_over_range": auc,
                "at_budgets": [
                    {
                        "sampled": s["sampled"],
                        focus: s["mean"],
                        contrast: d["mean"],
                        "diff": difference(s["mean"], d["mean"]),
                    }
                    for s, d in zip(
                        res["matched_budgets"][focus], res["matched_budgets"][contrast], strict=True
                    )
                ],
            }
    return res


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"

    def rich(self) -> Any:
        from rich.table import Table as RichTable

        t = RichTable(title=self.title, caption=self.note or None, caption_justify="left")
        for i, h in enumerate(self.headers):
            t.add_column(h, justify="left" if i == 0 else "right")
        for row in self.rows:
            t.add_row(*row)
        return t


def fmt_num(v: float | None, digits: int = 3, sign: bool = False) -> str:
    return "—" if v is None else (f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}")


def difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def fmt_mean_std(s: dict[str, Any], digits: int = 3) -> str:
    if not s or s.get("n", 0) == 0:
        return "—"
    std = "—" if s["std"] is None else f"{s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {std}"


def fmt_x(v: float | None, unit: str) -> str:
    if v is None:
        return "not reached"
    return f"{v:.1f}" if unit == "step" else f"{v:.0f}"


def study_tables(name: str, res: dict[str, Any], levels: Sequence[str]) -> list[Table]:
    definition = STUDIES[name]
    focus, baseline = definition.focus, definition.baseline
    tables: list[Table] = []
    missing = res["missing"]
    miss_note = (
        "Missing runs (not aggregated): " + ", ".join(f"{m['name']} ({m['status']})" for m in missing)
        if missing
        else ""
    )
    span = max((r["eval_version_span"] for r in res["runs"].values()), default=0)
    if span > 0:
        miss_note = (
            f"{miss_note} Caution: one evaluation saw up to {span + 1} policy versions (training went on while it"
            " ran); each is placed at the step where it started."
        ).strip()
    if definition.design == "sweep":
        ref_rows = [
            [
                f"{a} (reference)",
                str(s["n"]),
                "—",
                fmt_mean_std(s["overall"]),
                *(fmt_mean_std(s["levels"].get(lv, {})) for lv in levels),
                "—",
            ]
            for a, s in res["reference"].items()
        ]
        grpo_final = res["reference"].get(baseline, {}).get("overall")
        rows = []
        for p, s in res["by_noise"].items():
            vs = fmt_num(
                difference(s["overall"]["mean"], grpo_final["mean"] if grpo_final else None), sign=True
            )
            rows.append(
                [
                    f"{focus} p={p}",
                    str(s["n"]),
                    vs,
                    fmt_mean_std(s["overall"]),
                    *(fmt_mean_std(s["levels"].get(lv, {})) for lv in levels),
                    fmt_target(s["target_steps"]),
                ]
            )
        tables.append(
            Table(
                f"{definition.label}: final held-out accuracy (mean ± std over seeds)",
                [
                    "run",
                    "n",
                    f"vs {baseline}",
                    "overall",
                    *(f"{lv} steps" for lv in levels),
                    f"steps to {baseline} final / {baseline} steps",
                ],
                rows + ref_rows,
                miss_note,
            )
        )
        return tables
    final = res["final"]
    tables.append(
        Table(
            f"{name}: final held-out accuracy (mean ± std over seeds)",
            ["algo", "n", "steps", "completions", "initial", "overall", *(f"{lv} steps" for lv in levels)],
            [
                [
                    a,
                    str(s["n"]),
                    f"{s['steps']['mean']:.0f}",
                    f"{s['sampled']['mean']:.0f}",
                    fmt_mean_std(s["initial_overall"]),
                    fmt_mean_std(s["overall"]),
                    *(fmt_mean_std(s["levels"].get(lv, {})) for lv in levels),
                ]
                for a, s in final.items()
            ],
            miss_note,
        )
    )
    if "matched_budgets" in res and res["matched_budgets"]["budgets"]:
        mb = res["matched_budgets"]
        tables.append(
            Table(
                f"{name}: held-out accuracy at matched budgets of completions sampled",
                ["algo", *(f"{b:.0f}" for b in mb["budgets"])],
                [[a, *(fmt_mean_std(v) for v in mb[a])] for a in final],
                "Each seed's accuracy-vs-completions curve interpolated linearly between evaluations.",
            )
        )
    rows = []
    for x, t in res["target"].items():
        if not t.get("available"):
            continue
        unit = "steps" if x == "step" else "completions"
        per_seed = ", ".join(f"s{p['seed']}: {fmt_x(p['x'], x)}" for p in t["per_seed"])
        rows.append(
            [
                unit,
                f"{t['threshold']:.3f}",
                fmt_x(t["grpo_final_x"], x),
                per_seed,
                fmt_target(t),
                "—" if t["mean_curve_ratio"] is None else f"{t['mean_curve_ratio']:.2f}",
                fmt_x(t["grpo_mean_curve_crossing_x"], x),
                ("yes" if t["target_met"] else "no") + (" (see notes)" if t["notes"] else ""),
            ]
        )
    if rows:
        notes = sorted({n for t in res["target"].values() for n in t.get("notes", [])})
        tables.append(
            Table(
                f"{name}: {focus.upper()}'s steps to reach {baseline.upper()}'s final held-out accuracy, as a ratio "
                f"to {baseline.upper()}'s (target <= {TARGET_RATIO})",
                [
                    "unit",
                    f"{baseline} final acc",
                    f"{baseline} x",
                    f"{focus} first crossing per seed",
                    "ratio (mean ± std)",
                    "mean-curve ratio",
                    f"{baseline}'s own crossing",
                    "target met",
                ],
                rows,
                "First evaluation at or above the threshold, interpolated linearly from the one before; "
                "the mean ratio only when every seed reaches it. " + " ".join(notes),
            )
        )
    contrast = definition.contrast
    if contrast and f"{focus}_vs_{contrast}" in res:
        v = res[f"{focus}_vs_{contrast}"]
        auc = v["mean_accuracy_over_range"]
        rows = [
            [f"{b['sampled']:.0f}", fmt_num(b[focus]), fmt_num(b[contrast]), fmt_num(b["diff"], sign=True)]
            for b in v["at_budgets"]
        ]
        rows.append(
            [
                f"mean over 0..{v['range'][1]:.0f}",
                fmt_mean_std(auc[focus]),
                fmt_mean_std(auc[contrast]),
                fmt_num(difference(auc[focus]["mean"], auc[contrast]["mean"]), sign=True),
            ]
        )
        tables.append(
            Table(
                f"{name}: {focus.upper()} vs {contrast.upper()} at equal completions sampled (held-out overall accuracy)",
                ["completions", focus, contrast, f"{focus} - {contrast}"],
                rows,
                "Mean over seeds; the last row averages each seed's curve over the range (area / width).",
            )
        )
    return tables


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _draw_band(ax: Any, b: dict[str, Any], label: str, color: Any, scale: float = 1.0) -> None:
    if not b["x"]:
        return
    x = [v / scale for v in b["x"]]
    ax.plot(x, b["mean"], color=color, lw=1.6, label=f"{label} (n={b['n']})")
    if b["n"] > 1:
        lo = [m - (s or 0) for m, s in zip(b["mean"], b["std"], strict=True)]
        hi = [m + (s or 0) for m, s in zip(b["mean"], b["std"], strict=True)]
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)


def _accuracy_figure(
    curves: dict[str, dict[str, Any]], x: str, levels: Sequence[str], title: str, colors: dict[str, Any]
) -> Any:
    import matplotlib.pyplot as plt

    panels = ["overall", *levels]
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False, sharex=True)
    scale = 1000.0 if x == "sampled" else 1.0
    for ax, lv in zip(axes.flat, panels, strict=False):
        for label, c in curves.items():
            _draw_band(ax, c[x][lv], label, colors.get(label), scale)
        ax.set_title("overall" if lv == "overall" else f"{lv} steps", fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("completions sampled (thousands)" if x == "sampled" else "trainer step", fontsize=8)
    axes[0][0].set_ylabel("held-out accuracy", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title + " — mean ± std across seeds", fontsize=10)
    return fig


def plot_study(name: str, res: dict[str, Any], levels: Sequence[str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    definition = STUDIES[name]
    focus, baseline = definition.focus, definition.baseline
    paths: list[Path] = []
    if definition.design == "sweep":
        cmap = plt.get_cmap("viridis")
        ps = list(res["by_noise"])
        curves = {f"{focus} p={p}": res["by_noise"][p]["curves"] for p in ps if res["by_noise"][p]["n"]}
        colors: dict[str, Any] = {
            f"{focus} p={p}": cmap(i / max(1, len(ps) - 1) * 0.9) for i, p in enumerate(ps)
        }
        for a, c in res["reference_curves"].items():
            curves[a] = c
            colors[a] = ALGO_COLORS.get(a, "gray")
        if curves:
            fig = _accuracy_figure(curves, "step", levels, f"{definition.label}: held-out accuracy", colors)
            paths.append(_save(fig, out / f"{name}-accuracy-vs-step.png"))
        fig, ax = plt.subplots(figsize=(5, 3.4))
        pts = [(float(p), s["overall"]) for p, s in res["by_noise"].items() if s["n"]]
        if pts:
            ax.errorbar(
                [p for p, _ in pts],
                [s["mean"] for _, s in pts],
                yerr=[s["std"] or 0 for _, s in pts],
                marker="o",
                capsize=3,
                color=ALGO_COLORS.get(focus),
                label=f"{focus} (n={max(s['n'] for _, s in pts)} per p)",
            )
        grpo = res["reference"].get(baseline, {}).get("overall")
        if grpo and grpo["n"]:
            ax.axhline(
                grpo["mean"], color=ALGO_COLORS.get(baseline), ls="--", label=f"{baseline} (n={grpo['n']})"
            )
            if grpo["std"]:
                ax.axhspan(
                    grpo["mean"] - grpo["std"],
                    grpo["mean"] + grpo["std"],
                    color=ALGO_COLORS.get(baseline),
                    alpha=0.15,
                )
        ax.set(xlabel="judge noise p (fraction of random first errors)", ylabel="final held-out accuracy")
        ax.set_title(f"{definition.label}: final accuracy (mean ± std)", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        paths.append(_save(fig, out / f"{name}-final-accuracy.png"))
        return paths
    if not res["curves"]:
        return paths
    fig = _accuracy_figure(res["curves"], "step", levels, f"{name}: held-out accuracy", ALGO_COLORS)
    paths.append(_save(fig, out / f"{name}-accuracy-vs-step.png"))
    if definition.design != "replay":
        fig = _accuracy_figure(res["curves"], "sampled", levels, f"{name}: held-out accuracy", ALGO_COLORS)
        paths.append(_save(fig, out / f"{name}-accuracy-vs-sampled.png"))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for a, b in res["all_negative"].items():
        label = a if b["kind"] == "batch_all_negative" else f"{a}: dropped (all-neg or all-pos) of sampled"
        _draw_band(ax, b, label, ALGO_COLORS.get(a))
        if b["kind"] != "batch_all_negative" and ax.lines:
            ax.lines[-1].set_linestyle("--")
    window = next((b["window"] for b in res["all_negative"].values()), 1)
    ax.set(xlabel="trainer step", ylabel="fraction", ylim=(-0.02, 1.02))
    ax.set_title(f"{name}: all-negative groups per batch (rolling {window} steps)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7)
    paths.append(_save(fig, out / f"{name}-all-negative.png"))
    return paths


def default_levels() -> list[str]:
    from sgpo.tasks.tiny import TINY_PRESET

    return [str(s) for s in TINY_PRESET.rl_steps]


def aggregate(
    out: Path,
    console: Any,
    levels: Sequence[str] | None = None,
    budgets: Sequence[float] | None = None,
    window: int = 5,
    plots: bool = True,
) -> dict[str, Any]:
    """Read every planned study in `out`, write results.json, tables.md and PNGs; print the tables."""
    plans = load_plans(out)
    levels = list(levels) if levels else default_levels()
    collected = {name: collect(out, plan) for name, plan in plans.items()}
    if levels == ["all"]:  # every level any complete run was evaluated on
        found = {lv for runs, _ in collected.values() for r in runs for e in r.evals for lv in e.accuracy}
        levels = sorted(found, key=level_key)
    results: dict[str, Any] = {"out": str(out), "levels": levels, "studies": {}}
    md = [
        "# Experiment results\n",
        f"Generated by `sgpo experiment aggregate --out {out}`. Mean ± sample std across seeds; n = seeds "
        "with a complete run. Definitions: services/sgpo/experiments/stats.py.\n",
    ]
    pngs: list[Path] = []
    for name in STUDIES:
        if name not in plans:
            continue
        plan = plans[name]
        runs, missing = collected[name]
        res = aggregate_study(plan, runs, missing, levels, budgets, window)
        results["studies"][name] = res
        md.append(f"## {name}\n")
        if missing:
            md.append(
                f"**{len(missing)} of {len(plan.runs)} runs missing:** "
                + ", ".join(f"`{m['name']}` ({m['status']})" for m in missing)
                + "\n"
            )
        for t in study_tables(name, res, levels):
            console.print(t.rich())
            md.append(t.markdown())
        if missing:
            console.print(
                f"[yellow]{name}: {len(missing)} of {len(plan.runs)} runs missing:[/] "
                + ", ".join(f"{m['name']} ({m['status']})" for m in missing)
            )
        if plots and runs:
            new = plot_study(name, res, levels, out)
            pngs += new
            md += [f"![{p.stem}]({p.name})\n" for p in new]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    (out / "tables.md").write_text("\n".join(md))
    console.print(
        f"wrote {out / 'results.json'}, {out / 'tables.md'}" + (f" and {len(pngs)} plots" if pngs else "")
    )
    return results


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and math.isnan(o):
        return None
    raise TypeError(f"not JSON serializable: {type(o)}")
