"""The tuned comparison's report: OUT/tune-results.json, OUT/tune-tables.md and OUT/tune-*.png.

Read from the run folders of the `tune-sweep` and `tune` plans in OUT/experiment.json:

- **selection**: each algorithm's mean final validation accuracy per learning rate, the rate chosen
  (`sgpo.experiments.tune.SELECTION_RULE`).
- **final**: per algorithm at its rate, over the final seeds on the test split: final avg@k mean ± std and its
  95% percentile bootstrap interval (`stats.bootstrap_mean`, 10,000 resamples, seed 0); greedy accuracy of the
  same checkpoints (`sgpo experiment score --temperature 0`) likewise.
- **differences**: SGPO - X for every other algorithm (GRPO, DAPO, Dr.GRPO, TRL's GRPO), the estimate and the
  unpaired bootstrap interval (`stats.bootstrap_diff`), avg@k and greedy; whether the interval excludes 0.
- **controls**: SGPO at judge noise p and with color_scope = all_incorrect, each against GRPO's final runs.
- **cost**: per algorithm, wall-clock per run (experiment.json's start to summary.json's write), completions
  sampled (summary.json `sampled_total`, dropped groups included) and, per SGPO run, the judging share
  (`stats.judging_share`, as bench/vs_trl.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sgpo.common.jsonl import read_jsonl
from sgpo.experiments.report import StudyPlan, Table, _save, fmt_mean_std, load_complete, load_plans
from sgpo.experiments.state import read_json
from sgpo.experiments.stats import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    RunData,
    band,
    bootstrap_diff,
    bootstrap_mean,
    judging_share,
    mean_std,
)
from sgpo.experiments.studies import ALGO_COLORS, ALGO_ORDER
from sgpo.experiments.tune import select_lrs

FOCUS = "sgpo"
ORDER = (*ALGO_ORDER, "trl")
COLORS = {**ALGO_COLORS, "trl": "tab:purple"}


def _order(names: list[str]) -> list[str]:
    rank = {a: i for i, a in enumerate(ORDER)}
    return sorted(names, key=lambda a: (rank.get(a, len(rank)), a))


def run_cost(folder: Path) -> dict[str, Any]:
    """Wall-clock, completions sampled, and (an SGPO run) the judging share, from a complete run folder."""
    ident = read_json(folder / "experiment.json") or {}
    summary = read_json(folder / "summary.json") or {}
    wall = None
    if ident.get("started") and (folder / "summary.json").is_file():
        wall = (folder / "summary.json").stat().st_mtime - float(ident["started"])
    groups = read_jsonl(folder / "groups.jsonl")
    steps = {
        int(m["step"]): float(m["time_unix"])
        for m in read_jsonl(folder / "metrics.jsonl")
        if "time_unix" in m
    }
    sampled = summary.get("sampled_total", summary.get("sampled"))
    return {
        "wall_s": wall,
        "sampled": sampled,
        "judging": judging_share(groups, list(steps.values())) if groups else None,
    }


def load_part(
    out: Path, plan: StudyPlan
) -> tuple[list[tuple[dict[str, Any], RunData]], list[dict[str, Any]]]:
    """(plan entry, run data) of the plan's complete train/trl runs; the others with their status."""
    done, missing = load_complete(out, [s for s in plan.runs if s.get("kind", "train") != "score"])
    for spec, data in done:
        data.algo = spec.get("algo", data.algo)
    return done, missing


def greedy_of(out: Path, name: str) -> float | None:
    doc = read_json(out / "runs" / f"greedy-{name}" / "score.json")
    return float(doc["overall"]) if doc and doc.get("overall") is not None else None


def _ci(values: list[float]) -> dict[str, Any]:
    return bootstrap_mean(values).json()


def _diff(a: list[float], b: list[float]) -> dict[str, Any]:
    return bootstrap_diff(a, b).json()


def aggregate_tune(out: Path) -> dict[str, Any]:
    plans = load_plans(out)
    res: dict[str, Any] = {
        "bootstrap": {
            "kind": "percentile",
            "resamples": BOOTSTRAP_RESAMPLES,
            "seed": BOOTSTRAP_SEED,
            "level": 0.95,
            "differences": "unpaired: the two algorithms' seeds resampled independently",
        }
    }
    if "tune-sweep" in plans:
        sweep, missing = load_part(out, plans["tune-sweep"])
        table: dict[str, dict[str, list[float]]] = {}
        curves: dict[str, dict[str, Any]] = {}
        for spec, data in sweep:
            table.setdefault(data.algo, {}).setdefault(f"{spec['lr']:g}", []).append(data.final.overall)
            curves.setdefault(data.algo, {}).setdefault(f"{spec['lr']:g}", []).append(
                {"seed": data.seed, "curve": data.curve("step")}
            )
        res["sweep"] = {
            "missing": missing,
            "validation_final": {a: table[a] for a in _order(list(table))},
            "curves": curves,
        }
    if "tune" not in plans:
        if "sweep" in res:  # a sweep run alone: the rule's selection, as the final phase will make it
            params = plans["tune-sweep"].params
            finals = {(a, float(lr)): v for a, t in table.items() for lr, v in t.items()}
            chosen = select_lrs(finals, list(table), params["lrs"], len(params["tune_seeds"]))
            res["selection"] = {a: c["lr"] for a, c in chosen.items()}
        return res
    plan = plans["tune"]
    runs, missing = load_part(out, plan)
    # the rate of each algorithm's final runs (the plan may have been made in parts, one per session)
    res["selection"] = {
        s["algo"]: s.get("lr")
        for s in plan.runs
        if s.get("group") == "final" and s.get("kind", "train") == "train"
    }
    res["missing"] = missing
    final: dict[str, list[tuple[dict[str, Any], RunData]]] = {}
    controls: dict[str, list[tuple[dict[str, Any], RunData]]] = {}
    for spec, data in runs:
        group = spec.get("group")
        if group in ("final", "trl"):
            final.setdefault(data.algo, []).append((spec, data))
        elif group == "control":
            controls.setdefault(spec.get("tag") or "control", []).append((spec, data))
    per_algo: dict[str, Any] = {}
    for a in _order(list(final)):
        rs = sorted(final[a], key=lambda x: x[1].seed)
        accs = [d.final.overall for _, d in rs]
        greedy = [g for _, d in rs if (g := greedy_of(out, d.name)) is not None]
        costs = {d.name: run_cost(out / "runs" / d.name) for _, d in rs}
        walls = [c["wall_s"] for c in costs.values() if c["wall_s"] is not None]
        sampled = [c["sampled"] for c in costs.values() if c["sampled"] is not None]
        shares = [c["judging"] for c in costs.values() if c["judging"] and c["judging"]["judged"]]
        per_algo[a] = {
            "lr": rs[0][0].get("lr"),
            "seeds": [d.seed for _, d in rs],
            "final": accs,
            "initial": [d.evals[0].overall for _, d in rs],
            "final_stat": mean_std(accs).json(),
            "final_ci": _ci(accs),
            "greedy": greedy,
            "greedy_stat": mean_std(greedy).json(),
            "greedy_ci": _ci(greedy),
            "steps": mean_std(d.final.step for _, d in rs).json(),
            "per_seed": [
                {
                    "seed": d.seed,
                    "final": d.final.overall,
                    "greedy": greedy_of(out, d.name),
                    "curve": d.curve("step"),
                }
                for _, d in rs
            ],
            "band": band([d.curve("step") for _, d in rs]).json(),
            "cost": {
                "wall_s": mean_std(walls).json(),
                "sampled": mean_std(sampled).json(),
                "judging_rollout_share": mean_std(
                    s["rollout_share"] for s in shares if s["rollout_share"] is not None
                ).json(),
                "judging_wall_share": mean_std(
                    s["wall_share"] for s in shares if s["wall_share"] is not None
                ).json(),
                "per_run": costs,
            },
        }
    res["final"] = per_algo
    diffs: dict[str, Any] = {}
    if FOCUS in per_algo:
        f = per_algo[FOCUS]
        for a, s in per_algo.items():
            if a == FOCUS:
                continue
            diffs[f"{FOCUS}-{a}"] = {
                "avg": _diff(f["final"], s["final"]),
                "greedy": _diff(f["greedy"], s["greedy"]),
            }
    res["differences"] = diffs
    ctl: dict[str, Any] = {}
    grpo = per_algo.get("grpo")
    sgpo_final = {d["seed"]: d for d in per_algo.get(FOCUS, {}).get("per_seed", [])}
    control_seeds = sorted({d.seed for rs in controls.values() for _, d in rs})
    if sgpo_final and control_seeds:
        base = [sgpo_final[s]["final"] for s in control_seeds if s in sgpo_final]
        ctl["p=0"] = {"final": base, "stat": mean_std(base).json(), "ci": _ci(base)}
    for tag, rs in sorted(controls.items()):
        accs = [d.final.overall for _, d in sorted(rs, key=lambda x: x[1].seed)]
        greedy = [g for _, d in rs if (g := greedy_of(out, d.name)) is not None]
        ctl[tag] = {
            "final": accs,
            "stat": mean_std(accs).json(),
            "ci": _ci(accs),
            "greedy_stat": mean_std(greedy).json(),
            "curves": [{"seed": d.seed, "curve": d.curve("step")} for _, d in rs],
        }
    for entry in ctl.values():
        if grpo:
            entry["minus_grpo"] = _diff(entry["final"], grpo["final"])
    res["controls"] = ctl
    return res


def _fmt_ci(ci: dict[str, Any], sign: bool = False) -> str:
    if (
        not ci
        or ci.get("estimate") is None
        or (isinstance(ci["estimate"], float) and math.isnan(ci["estimate"]))
    ):
        return "—"
    f = f"{{:{'+' if sign else ''}.3f}}"
    if ci.get("low") is None:
        return f.format(ci["estimate"]) + " (n < 2)"
    return f"{f.format(ci['estimate'])} [{f.format(ci['low'])}, {f.format(ci['high'])}]"


def tune_tables(res: dict[str, Any]) -> list[Table]:
    tables: list[Table] = []
    sel = res.get("selection", {})
    if "sweep" in res:
        vf = res["sweep"]["validation_final"]
        lrs = sorted({float(lr) for t in vf.values() for lr in t})
        rows = []
        for a, t in vf.items():
            cells = []
            for lr in lrs:
                vals = t.get(f"{lr:g}", [])
                cell = "—" if not vals else f"{sum(vals) / len(vals):.3f} (n={len(vals)})"
                if sel.get(a) is not None and abs(float(sel[a]) - lr) < 1e-15:
                    cell = f"**{cell}**"
                cells.append(cell)
            rows.append([a, *cells, "—" if sel.get(a) is None else f"{float(sel[a]):g}"])
        tables.append(
            Table(
                "Tuning: final validation accuracy (overall) by learning rate, mean over tuning seeds",
                ["algo", *(f"lr {lr:g}" for lr in lrs), "selected"],
                rows,
                "Selected in bold: " + _rule(),
            )
        )
    if res.get("final"):
        rows = []
        for a, s in res["final"].items():
            c = s["cost"]
            rows.append(
                [
                    a,
                    "—" if s["lr"] is None else f"{s['lr']:g}",
                    str(s["final_stat"]["n"]),
                    fmt_mean_std(mean_std(s["initial"]).json()),
                    fmt_mean_std(s["final_stat"]),
                    _fmt_ci(s["final_ci"]),
                    fmt_mean_std(s["greedy_stat"]),
                    _fmt_ci(s["greedy_ci"]),
                    f"{s['steps']['mean']:.0f}" if s["steps"]["n"] else "—",
                    f"{c['sampled']['mean']:.0f}" if c["sampled"]["n"] else "—",
                    f"{c['wall_s']['mean'] / 60:.1f}" if c["wall_s"]["n"] else "—",
                    fmt_mean_std(c["judging_rollout_share"]) if c["judging_rollout_share"]["n"] else "—",
                ]
            )
        tables.append(
            Table(
                "Final: held-out test accuracy at each algorithm's selected learning rate",
                [
                    "algo",
                    "lr",
                    "seeds",
                    "initial",
                    "final avg@k (mean ± std)",
                    "95% CI",
                    "greedy (mean ± std)",
                    "greedy 95% CI",
                    "steps",
                    "completions sampled",
                    "wall min/run",
                    "judging share",
                ],
                rows,
                "95% CI: percentile bootstrap over seeds (10,000 resamples, seed 0). Greedy: the last checkpoint, "
                "temperature 0, same problems. Judging share: judge / (generate + verify + judge) seconds of the "
                "rollout path (groups.jsonl), mean over runs.",
            )
        )
    if res.get("differences"):
        rows = [
            [
                k.replace("-", " - "),
                _fmt_ci(d["avg"], sign=True),
                "yes" if d["avg"].get("excludes_zero") else "no",
                _fmt_ci(d["greedy"], sign=True),
                "yes" if d["greedy"].get("excludes_zero") else "no",
            ]
            for k, d in res["differences"].items()
        ]
        tables.append(
            Table(
                "Differences in final test accuracy, with 95% intervals",
                ["difference", "avg@k [95% CI]", "excludes 0", "greedy [95% CI]", "excludes 0"],
                rows,
                "Unpaired percentile bootstrap of the difference of means (each algorithm's seeds resampled "
                "independently), 10,000 resamples, seed 0.",
            )
        )
    if res.get("controls"):
        rows = [
            [
                f"sgpo {tag}",
                str(c.get("stat", {}).get("n", 0)),
                fmt_mean_std(c["stat"]),
                _fmt_ci(c["ci"]),
                _fmt_ci(c.get("minus_grpo", {}), sign=True),
                "yes" if c.get("minus_grpo", {}).get("excludes_zero") else "no",
            ]
            for tag, c in res["controls"].items()
        ]
        tables.append(
            Table(
                "Controls at SGPO's selected learning rate: judge noise p and color_scope = all_incorrect",
                ["run", "seeds", "final (mean ± std)", "95% CI", "minus GRPO [95% CI]", "excludes 0"],
                rows,
                "p = 1: the judge's first error replaced by a random step for every response. p=0 is the final "
                "SGPO runs of the control seeds. GRPO: its final runs (all seeds).",
            )
        )
    return tables


def _rule() -> str:
    from sgpo.experiments.tune import SELECTION_RULE

    return SELECTION_RULE


def plot_tune(res: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: list[Path] = []
    if res.get("final"):
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        for a, s in res["final"].items():
            color = COLORS.get(a, "gray")
            for p in s["per_seed"]:
                xs = [x for x, _ in p["curve"]]
                ax.plot(xs, [y for _, y in p["curve"]], color=color, lw=0.7, alpha=0.45)
            b = s["band"]
            if b["x"]:
                lr = "" if s["lr"] is None else f", lr {s['lr']:g}"
                ax.plot(b["x"], b["mean"], color=color, lw=2.0, label=f"{a}{lr} (n={b['n']})")
        ax.set(xlabel="trainer step", ylabel="held-out test accuracy (overall)")
        ax.set_title("Tuned study: each seed (thin) and the mean (thick)", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        paths.append(_save(fig, out / "tune-final-accuracy.png"))
    if res.get("sweep") and res["sweep"]["validation_final"]:
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        for a, t in res["sweep"]["validation_final"].items():
            lrs = sorted(t, key=float)
            color = COLORS.get(a, "gray")
            for lr in lrs:
                ax.scatter([float(lr)] * len(t[lr]), t[lr], color=color, s=10, alpha=0.5)
            ax.plot(
                [float(lr) for lr in lrs], [sum(t[lr]) / len(t[lr]) for lr in lrs], "o-", color=color, label=a
            )
        ax.set(xscale="log", xlabel="learning rate", ylabel="final validation accuracy")
        ax.set_title("Tuning sweep: each seed (dots) and the mean", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / "tune-sweep.png"))
    if res.get("controls"):
        fig, ax = plt.subplots(figsize=(5.6, 3.6))
        tags = list(res["controls"])
        for i, tag in enumerate(tags):
            c = res["controls"][tag]
            ax.scatter([i] * len(c["final"]), c["final"], color="tab:blue", s=12, alpha=0.6)
            ci = c["ci"]
            if ci.get("low") is not None:
                ax.errorbar(
                    [i], [ci["estimate"]], yerr=[[ci["estimate"] - ci["low"]], [ci["high"] - ci["estimate"]]],
                    fmt="o", color="black", capsize=3,
                )  # fmt: skip
        grpo = res.get("final", {}).get("grpo")
        if grpo and grpo["final"]:
            m = sum(grpo["final"]) / len(grpo["final"])
            ax.axhline(m, color=COLORS["grpo"], ls="--", label=f"grpo (n={len(grpo['final'])})")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(tags)), [f"sgpo {t}" for t in tags], fontsize=7)
        ax.set(ylabel="final test accuracy")
        ax.set_title("Controls: each seed and the mean with its 95% CI", fontsize=10)
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out / "tune-controls.png"))
    return paths


def write_tune_report(out: Path, console: Any, plots: bool = True) -> dict[str, Any]:
    res = aggregate_tune(out)
    md = [
        "# The tuned comparison: learning rates chosen per algorithm on validation\n",
        f"Generated by `sgpo experiment aggregate --out {out}`. Definitions: "
        "services/sgpo/experiments/tune_report.py, stats.py.\n",
    ]
    for t in tune_tables(res):
        console.print(t.rich())
        md.append(t.markdown())
    missing = res.get("missing", []) + res.get("sweep", {}).get("missing", [])
    if missing:
        line = "Missing runs (not aggregated): " + ", ".join(f"{m['name']} ({m['status']})" for m in missing)
        md.append(line + "\n")
        console.print(f"[yellow]{line}[/]")
    pngs = plot_tune(res, out) if plots else []
    md += [f"![{p.stem}]({p.name})\n" for p in pngs]
    (out / "tune-results.json").write_text(json.dumps(res, indent=2, default=_nan_none))
    (out / "tune-tables.md").write_text("\n".join(md))
    console.print(f"wrote {out / 'tune-results.json'}, {out / 'tune-tables.md'} and {len(pngs)} plots")
    return res


def _nan_none(o: Any) -> Any:
    return None
