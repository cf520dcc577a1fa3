"""Aggregation of `sgpo experiment` studies: run folders -> results.json, tables.md and PNG plots.

The math is pure Python (no numpy) and lives in small functions the tests call directly:

- **curves**: a run's held-out accuracy as points (x, accuracy) with x = trainer step or completions sampled.
  Completions sampled at an evaluation come from the eval record's `sampled` when present, else from the
  orchestrator's groups.jsonl (the `sampled` of the last group that step consumed: groups are consumed in
  queue order, `batch_groups` per step), else step x batch_groups x group_size (exact for sgpo and grpo,
  which drop nothing; an underestimate for dapo). results.json says which source each run used.
- **bands**: mean ± sample std (ddof 1; none with one seed) across seeds on a common grid: the union of the
  seeds' x values inside the range every seed covers (no extrapolation, so every point averages all n
  seeds); a seed not evaluated at a grid x is interpolated linearly between its two neighbouring
  evaluations.
- **first crossing** of a threshold T: the first evaluation with accuracy >= T (minus 1e-9 for float
  noise); the reported x interpolates linearly between it and the evaluation before (0 if the very first
  evaluation is already >= T); `eval_x` is the evaluated x itself (an upper bound at the eval cadence). A
  curve that never reaches T is "not reached" (None), never extrapolated.
- **target** (issue 8): T = GRPO's final held-out accuracy, mean over GRPO seeds. For each SGPO seed, the
  steps (and completions) of its first crossing of T, divided by GRPO's steps (completions) at its final
  evaluation, mean over GRPO seeds. The mean ratio over SGPO seeds is reported only when every seed reached
  T; otherwise "not reached by k of n". Also reported: the crossing of SGPO's mean curve, and GRPO's own
  first crossing of T (the same rule applied to GRPO), so a plateaued GRPO curve is visible.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPS = 1e-9
TARGET_RATIO = 0.7
ALGO_COLORS = {"sgpo": "tab:blue", "grpo": "tab:orange", "dapo": "tab:green"}

# --------------------------------------------------------------------------------------------------------
# Reading run folders


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line being written while we read
    return rows


def run_status(run_dir: Path) -> str:
    """`complete` (summary.json says not interrupted), `interrupted`, `incomplete` (started, no summary:
    crashed, killed or still running) or `missing`."""
    if not run_dir.is_dir():
        return "missing"
    path = run_dir / "summary.json"
    if path.is_file():
        try:
            summary = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return "incomplete"
        return "interrupted" if summary.get("interrupted", True) else "complete"
    return "incomplete"


@dataclass
class EvalPoint:
    step: int
    sampled: int
    overall: float
    accuracy: dict[str, float]


@dataclass
class RunData:
    name: str
    algo: str
    seed: int
    noise: float
    replay: bool
    batch_groups: int
    group_size: int
    evals: list[EvalPoint]
    all_negative: list[tuple[int, float]]
    """(trainer step, fraction of the step's groups that were all-negative)."""
    sampled_by_step: dict[int, int] = field(default_factory=dict)
    """Completions sampled up to the groups each step consumed (from groups.jsonl; may be empty)."""
    sampled_source: str = "eval"
    eval_version_span: int = 0
    """Most policy versions one evaluation saw, minus one (0: every evaluation scored a single policy)."""

    @property
    def final(self) -> EvalPoint:
        return self.evals[-1]

    def curve(self, x: str, level: str = "overall") -> list[tuple[float, float]]:
        pts = []
        for e in self.evals:
            y = e.overall if level == "overall" else e.accuracy.get(level)
            if y is not None and not (isinstance(y, float) and math.isnan(y)):
                pts.append((float(e.step if x == "step" else e.sampled), float(y)))
        return pts


def sampled_by_step(groups: Sequence[dict[str, Any]], batch_groups: int) -> dict[int, int]:
    """Step s consumed queue groups [(s-1)B, sB): its cost is the `sampled` of group sB-1 (0 at step 0)."""
    out = {0: 0}
    for s in range(1, len(groups) // batch_groups + 1):
        value = groups[s * batch_groups - 1].get("sampled")
        if value is None:
            break
        out[s] = int(value)
    return out


def load_run(run_dir: Path, name: str | None = None) -> RunData:
    doc = tomllib.loads((run_dir / "run.toml").read_text())
    algo = doc.get("algo", {}).get("algo", "sgpo")
    trainer, orch = doc.get("trainer", {}), doc.get("orchestrator", {})
    batch_groups = int(trainer.get("batch_groups", orch.get("batch_groups", 16)))
    group_size = int(doc.get("algo", {}).get("group_size", 8))
    groups = read_jsonl(run_dir / "groups.jsonl")
    by_step = sampled_by_step(groups, batch_groups)
    raw = [e for e in read_jsonl(run_dir / "eval.jsonl") if "step" in e and "overall" in e]
    by_eval_step: dict[int, dict[str, Any]] = {}
    for e in raw:  # one point per step: the last evaluation there
        by_eval_step[int(e["step"])] = e
    source = "eval"
    evals = []
    for step in sorted(by_eval_step):
        e = by_eval_step[step]
        if e.get("sampled") is not None:
            sampled = int(e["sampled"])
        elif step in by_step:
            sampled, source = by_step[step], "groups" if source == "eval" else source
        else:
            sampled, source = step * batch_groups * group_size, "estimate"
        evals.append(
            EvalPoint(
                step, sampled, float(e["overall"]), {str(k): float(v) for k, v in e["accuracy"].items()}
            )
        )
    span = max(
        (max(e["policy_versions"]) - min(e["policy_versions"]) for e in raw if e.get("policy_versions")),
        default=0,
    )
    neg = [
        (int(m["step"]), float(m["frac_all_negative"]))
        for m in read_jsonl(run_dir / "metrics.jsonl")
        if "step" in m and m.get("frac_all_negative") is not None
    ]
    return RunData(
        name=name or run_dir.name,
        algo=algo,
        seed=int(trainer.get("seed", orch.get("seed", 0))),
        noise=float(doc.get("judge", {}).get("noise", 0.0)),
        replay=bool(orch.get("replay")),
        batch_groups=batch_groups,
        group_size=group_size,
        evals=evals,
        all_negative=sorted(neg),
        sampled_by_step=by_step,
        sampled_source=source,
        eval_version_span=int(span),
    )


# --------------------------------------------------------------------------------------------------------
# The math


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None
    n: int

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0:
            return "—"
        std = "—" if self.std is None else f"{self.std:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {std} (n={self.n})"

    def json(self) -> dict[str, Any]:
        return {"mean": self.mean if self.n else None, "std": self.std, "n": self.n}


def mean_std(values: Iterable[float]) -> Stat:
    """Mean and sample standard deviation (ddof 1; None with fewer than two values)."""
    vals = [float(v) for v in values]
    if not vals:
        return Stat(float("nan"), None, 0)
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals))


def interp_at(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """Linear interpolation of sorted (x, y) points at x; None outside their range (no extrapolation)."""
    if not points or x < points[0][0] - EPS or x > points[-1][0] + EPS:
        return None
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        if x0 - EPS <= x <= x1 + EPS:
            if abs(x - x0) <= EPS:
                return y0
            if abs(x1 - x) <= EPS or x1 == x0:
                return y1
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]  # a single point, x equal to it


@dataclass(frozen=True)
class Band:
    x: list[float]
    mean: list[float]
    std: list[float | None]
    n: int

    def json(self) -> dict[str, Any]:
        return {"x": self.x, "mean": self.mean, "std": self.std, "n": self.n}


def common_grid(curves: Sequence[Sequence[tuple[float, float]]]) -> list[float]:
    """The union of the curves' x values inside the range every curve covers."""
    curves = [c for c in curves if c]
    if not curves:
        return []
    lo = max(c[0][0] for c in curves)
    hi = min(c[-1][0] for c in curves)
    return sorted({x for c in curves for x, _ in c if lo - EPS <= x <= hi + EPS})


def band(curves: Sequence[Sequence[tuple[float, float]]], grid: Sequence[float] | None = None) -> Band:
    """Mean ± std across curves (one per seed) at each x of `grid` (default: `common_grid`)."""
    curves = [sorted(c) for c in curves if c]
    xs = list(grid) if grid is not None else common_grid(curves)
    out_x, means, stds = [], [], []
    for x in xs:
        ys = [interp_at(c, x) for c in curves]
        if any(y is None for y in ys):
            continue  # an explicit grid point some seed does not cover
        s = mean_std(y for y in ys if y is not None)
        out_x.append(x)
        means.append(s.mean)
        stds.append(s.std)
    return Band(out_x, means, stds, len(curves))


@dataclass(frozen=True)
class Crossing:
    x: float | None
    """Interpolated x of the first crossing; None: not reached."""
    eval_x: float | None
    """x of the first evaluation at or above the threshold."""


def first_crossing(points: Sequence[tuple[float, float]], threshold: float) -> Crossing:
    pts = sorted(points)
    for i, (x, y) in enumerate(pts):
        if y >= threshold - EPS:
            if i == 0:
                return Crossing(x, x)
            x0, y0 = pts[i - 1]
            frac = (threshold - y0) / (y - y0) if y > y0 else 1.0
            return Crossing(x0 + min(max(frac, 0.0), 1.0) * (x - x0), x)
    return Crossing(None, None)


def rolling_mean(points: Sequence[tuple[float, float]], window: int) -> list[tuple[float, float]]:
    """Trailing mean over `window` points (fewer at the start)."""
    out = []
    for i, (x, _) in enumerate(points):
        chunk = points[max(0, i - window + 1) : i + 1]
        out.append((x, sum(y for _, y in chunk) / len(chunk)))
    return out


def dropped_fraction(
    by_step: dict[int, int], batch_groups: int, group_size: int, window: int
) -> list[tuple[float, float]]:
    """Dynamic sampling: fraction of sampled completions dropped (all-correct or all-wrong groups) over the
    last `window` steps, from the sampling cost of each step (an upper bound on the all-negative fraction)."""
    steps = sorted(by_step)
    out = []
    for s in steps:
        if s < window or (s - window) not in by_step:
            continue
        cost = by_step[s] - by_step[s - window]
        if cost > 0:
            out.append((float(s), max(0.0, 1.0 - window * batch_groups * group_size / cost)))
    return out


def area_mean(points: Sequence[tuple[float, float]], lo: float, hi: float) -> float | None:
    """Mean of the piecewise-linear curve over [lo, hi] (trapezoids); None if it does not cover the range."""
    pts = sorted(points)
    if hi <= lo or interp_at(pts, lo) is None or interp_at(pts, hi) is None:
        return None
    xs = [lo, *(x for x, _ in pts if lo < x < hi), hi]
    ys = [interp_at(pts, x) or 0.0 for x in xs]  # never None: inside the covered range
    total = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        total += (x1 - x0) * (y0 + y1) / 2
    return total / (hi - lo)


def target_metric(
    sgpo: Sequence[RunData], grpo: Sequence[RunData], x: str, ratio_target: float = TARGET_RATIO
) -> dict[str, Any]:
    """x ('step' or 'sampled') for SGPO to reach GRPO's final held-out accuracy, as a ratio to GRPO's x."""
    if not sgpo or not grpo:
        return {"available": False, "reason": "needs complete sgpo and grpo runs"}
    threshold = mean_std(r.final.overall for r in grpo).mean
    grpo_x = mean_std((r.final.step if x == "step" else r.final.sampled) for r in grpo).mean
    grpo_initial = mean_std(r.evals[0].overall for r in grpo).mean
    per_seed: list[dict[str, Any]] = []
    for r in sorted(sgpo, key=lambda r: r.seed):
        c = first_crossing(r.curve(x), threshold)
        per_seed.append(
            {
                "run": r.name,
                "seed": r.seed,
                "x": c.x,
                "eval_x": c.eval_x,
                "ratio": None if c.x is None or grpo_x <= 0 else c.x / grpo_x,
                "final_x": r.final.step if x == "step" else r.final.sampled,
            }
        )
    reached = [p for p in per_seed if p["ratio"] is not None]
    ratio = mean_std(p["ratio"] for p in reached) if len(reached) == len(per_seed) else None
    sgpo_band = band([r.curve(x) for r in sgpo])
    grpo_band = band([r.curve(x) for r in grpo])
    mean_cross = first_crossing(list(zip(sgpo_band.x, sgpo_band.mean, strict=True)), threshold)
    grpo_cross = first_crossing(list(zip(grpo_band.x, grpo_band.mean, strict=True)), threshold)
    notes = []
    if threshold <= grpo_initial + EPS:
        notes.append(
            "GRPO's final accuracy is not above its initial accuracy: the threshold is met at the start and the"
            " ratio says nothing about learning speed"
        )
    return {
        "available": True,
        "x": x,
        "threshold": threshold,
        "grpo_final_x": grpo_x,
        "grpo_initial_accuracy": grpo_initial,
        "grpo_mean_curve_crossing_x": grpo_cross.x,
        "per_seed": per_seed,
        "reached": len(reached),
        "n": len(per_seed),
        "mean_ratio": ratio.json() if ratio else None,
        "mean_curve_crossing_x": mean_cross.x,
        "mean_curve_ratio": None if mean_cross.x is None or grpo_x <= 0 else mean_cross.x / grpo_x,
        "mean_curve_ratio_vs_grpo_crossing": (
            None
            if mean_cross.x is None or not grpo_cross.x
            else mean_cross.x / grpo_cross.x  # GRPO crossing at 0: undefined
        ),
        "target_ratio": ratio_target,
        "target_met": bool(ratio and ratio.mean <= ratio_target and not notes),
        "notes": notes,
    }


def fmt_target(t: dict[str, Any]) -> str:
    if not t.get("available"):
        return "n/a"
    if t["mean_ratio"] is None:
        return f"not reached ({t['n'] - t['reached']} of {t['n']} seeds never reach it)"
    m = t["mean_ratio"]
    std = "—" if m["std"] is None else f"{m['std']:.2f}"
    return f"{m['mean']:.2f} ± {std} (n={m['n']})"


# --------------------------------------------------------------------------------------------------------
# Studies


def level_key(level: str) -> tuple[int, str]:
    return (int(level), level) if level.isdigit() else (10**9, level)


def by_algo(runs: Iterable[RunData]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for r in runs:
        out.setdefault(r.algo, []).append(r)
    order = {a: i for i, a in enumerate(("sgpo", "grpo", "dapo"))}
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 99)))


def final_stats(runs: Sequence[RunData], levels: Sequence[str]) -> dict[str, Any]:
    return {
        "n": len(runs),
        "seeds": sorted(r.seed for r in runs),
        "steps": mean_std(r.final.step for r in runs).json(),
        "sampled": mean_std(r.final.sampled for r in runs).json(),
        "overall": mean_std(r.final.overall for r in runs).json(),
        "initial_overall": mean_std(r.evals[0].overall for r in runs).json(),
        "levels": {
            lv: mean_std(r.final.accuracy[lv] for r in runs if lv in r.final.accuracy).json() for lv in levels
        },
    }


def curves_json(runs: Sequence[RunData], levels: Sequence[str], axes: Sequence[str]) -> dict[str, Any]:
    return {x: {lv: band([r.curve(x, lv) for r in runs]).json() for lv in ("overall", *levels)} for x in axes}


def all_negative_band(runs: Sequence[RunData], window: int) -> dict[str, Any]:
    """Trainer-batch all-negative fraction (rolling mean over `window` steps), mean ± std across seeds; for
    dynamic sampling, whose batches hold no all-negative group, the dropped fraction of sampled groups."""
    if runs and runs[0].algo == "dapo":
        curves = [dropped_fraction(r.sampled_by_step, r.batch_groups, r.group_size, window) for r in runs]
        kind = "dropped_fraction"
    else:
        curves = [rolling_mean([(float(s), f) for s, f in r.all_negative], window) for r in runs]
        kind = "batch_all_negative"
    return {"kind": kind, "window": window, **band(curves).json()}


def matched_budgets(runs: Sequence[RunData], budgets: Sequence[float] | None) -> list[float]:
    """Default: 1/4, 1/2, 3/4 and all of the completions every run reached."""
    if budgets:
        return [float(b) for b in budgets]
    if not runs:
        return []
    top = min(r.final.sampled for r in runs)
    return [round(top * f) for f in (0.25, 0.5, 0.75, 1.0)] if top > 0 else []


def at_budgets(runs: Sequence[RunData], budgets: Sequence[float]) -> list[dict[str, Any]]:
    out = []
    for b in budgets:
        ys = [interp_at(r.curve("sampled"), b) for r in runs]
        missing = sum(y is None for y in ys)
        out.append({"sampled": b, **mean_std(y for y in ys if y is not None).json(), "not_covered": missing})
    return out


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


def collect(out: Path, plan: StudyPlan) -> tuple[list[RunData], list[dict[str, Any]]]:
    """The plan's complete runs, and the others with their status."""
    complete, missing = [], []
    for spec in plan.runs:
        run_dir = out / "runs" / spec["name"]
        status = run_status(run_dir)
        if status == "complete":
            try:
                data = load_run(run_dir, spec["name"])
            except (OSError, ValueError, KeyError) as e:
                missing.append({"name": spec["name"], "status": f"unreadable: {e}"})
                continue
            if not data.evals:
                missing.append({"name": spec["name"], "status": "complete but no evaluation"})
                continue
            data.noise = float(spec.get("noise", data.noise))
            complete.append(data)
        else:
            missing.append({"name": spec["name"], "status": status, "folder": str(run_dir)})
    return complete, missing


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
    if plan.name == "noise":
        sgpo = [r for r in runs if r.algo == "sgpo"]
        ref = [r for r in runs if r.algo != "sgpo"]
        grpo = [r for r in ref if r.algo == "grpo"]
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
    groups = by_algo(runs)
    axes = ("step",) if plan.name == "offline" else ("step", "sampled")
    res["final"] = {a: final_stats(rs, levels) for a, rs in groups.items()}
    res["curves"] = {a: curves_json(rs, levels, axes) for a, rs in groups.items()}
    res["all_negative"] = {a: all_negative_band(rs, window) for a, rs in groups.items()}
    sgpo, grpo, dapo = groups.get("sgpo", []), groups.get("grpo", []), groups.get("dapo", [])
    res["target"] = {x: target_metric(sgpo, grpo, x) for x in axes}
    if plan.name != "offline":
        bs = matched_budgets(runs, budgets)
        res["matched_budgets"] = {"budgets": bs, **{a: at_budgets(rs, bs) for a, rs in groups.items()}}
        if sgpo and dapo:
            top = min(r.final.sampled for r in [*sgpo, *dapo])
            auc = {
                a: mean_std(
                    v for r in rs if (v := area_mean(r.curve("sampled"), 0.0, top)) is not None
                ).json()
                for a, rs in (("sgpo", sgpo), ("dapo", dapo))
            }
            res["sgpo_vs_dapo"] = {
                "range": [0, top],
                "mean_accuracy_over_range": auc,
                "at_budgets": [
                    {
                        "sampled": s["sampled"],
                        "sgpo": s["mean"],
                        "dapo": d["mean"],
                        "diff": diff(s["mean"], d["mean"]),
                    }
                    for s, d in zip(
                        res["matched_budgets"]["sgpo"], res["matched_budgets"]["dapo"], strict=True
                    )
                ],
            }
    return res


# --------------------------------------------------------------------------------------------------------
# Tables (rich and markdown from the same rows)


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


def num(v: float | None, digits: int = 3, sign: bool = False) -> str:
    return "—" if v is None else (f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}")


def diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def pm(s: dict[str, Any], digits: int = 3) -> str:
    if not s or s.get("n", 0) == 0:
        return "—"
    std = "—" if s["std"] is None else f"{s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {std}"


def _x(v: float | None, unit: str) -> str:
    if v is None:
        return "not reached"
    return f"{v:.1f}" if unit == "step" else f"{v:.0f}"


def study_tables(name: str, res: dict[str, Any], levels: Sequence[str]) -> list[Table]:
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
    if name == "noise":
        ref_rows = [
            [
                f"{a} (reference)",
                str(s["n"]),
                "—",
                pm(s["overall"]),
                *(pm(s["levels"].get(lv, {})) for lv in levels),
                "—",
            ]
            for a, s in res["reference"].items()
        ]
        grpo_final = res["reference"].get("grpo", {}).get("overall")
        rows = []
        for p, s in res["by_noise"].items():
            vs = num(diff(s["overall"]["mean"], grpo_final["mean"] if grpo_final else None), sign=True)
            rows.append(
                [
                    f"sgpo p={p}",
                    str(s["n"]),
                    vs,
                    pm(s["overall"]),
                    *(pm(s["levels"].get(lv, {})) for lv in levels),
                    fmt_target(s["target_steps"]),
                ]
            )
        tables.append(
            Table(
                "Judge noise: final held-out accuracy (mean ± std over seeds)",
                [
                    "run",
                    "n",
                    "vs grpo",
                    "overall",
                    *(f"{lv} steps" for lv in levels),
                    "steps to grpo final / grpo steps",
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
                    pm(s["initial_overall"]),
                    pm(s["overall"]),
                    *(pm(s["levels"].get(lv, {})) for lv in levels),
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
                [[a, *(pm(v) for v in mb[a])] for a in final],
                "Each seed's accuracy-vs-completions curve interpolated linearly between evaluations.",
            )
        )
    rows = []
    for x, t in res["target"].items():
        if not t.get("available"):
            continue
        unit = "steps" if x == "step" else "completions"
        per_seed = ", ".join(f"s{p['seed']}: {_x(p['x'], x)}" for p in t["per_seed"])
        rows.append(
            [
                unit,
                f"{t['threshold']:.3f}",
                _x(t["grpo_final_x"], x),
                per_seed,
                fmt_target(t),
                "—" if t["mean_curve_ratio"] is None else f"{t['mean_curve_ratio']:.2f}",
                _x(t["grpo_mean_curve_crossing_x"], x),
                ("yes" if t["target_met"] else "no") + (" (see notes)" if t["notes"] else ""),
            ]
        )
    if rows:
        notes = sorted({n for t in res["target"].values() for n in t.get("notes", [])})
        tables.append(
            Table(
                f"{name}: SGPO's steps to reach GRPO's final held-out accuracy, as a ratio to GRPO's (target <= {TARGET_RATIO})",
                [
                    "unit",
                    "grpo final acc",
                    "grpo x",
                    "sgpo first crossing per seed",
                    "ratio (mean ± std)",
                    "mean-curve ratio",
                    "grpo's own crossing",
                    "target met",
                ],
                rows,
                "First evaluation at or above the threshold, interpolated linearly from the one before; "
                "the mean ratio only when every seed reaches it. " + " ".join(notes),
            )
        )
    if "sgpo_vs_dapo" in res:
        v = res["sgpo_vs_dapo"]
        auc = v["mean_accuracy_over_range"]
        rows = [
            [f"{b['sampled']:.0f}", num(b["sgpo"]), num(b["dapo"]), num(b["diff"], sign=True)]
            for b in v["at_budgets"]
        ]
        rows.append(
            [
                f"mean over 0..{v['range'][1]:.0f}",
                pm(auc["sgpo"]),
                pm(auc["dapo"]),
                num(diff(auc["sgpo"]["mean"], auc["dapo"]["mean"]), sign=True),
            ]
        )
        tables.append(
            Table(
                f"{name}: SGPO vs DAPO at equal completions sampled (held-out overall accuracy)",
                ["completions", "sgpo", "dapo", "sgpo - dapo"],
                rows,
                "Mean over seeds; the last row averages each seed's curve over the range (area / width).",
            )
        )
    return tables


# --------------------------------------------------------------------------------------------------------
# Plots


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

    paths: list[Path] = []
    if name == "noise":
        cmap = plt.get_cmap("viridis")
        ps = list(res["by_noise"])
        curves = {f"sgpo p={p}": res["by_noise"][p]["curves"] for p in ps if res["by_noise"][p]["n"]}
        colors: dict[str, Any] = {
            f"sgpo p={p}": cmap(i / max(1, len(ps) - 1) * 0.9) for i, p in enumerate(ps)
        }
        for a, c in res["reference_curves"].items():
            curves[a] = c
            colors[a] = ALGO_COLORS.get(a, "gray")
        if curves:
            fig = _accuracy_figure(curves, "step", levels, "Judge noise: held-out accuracy", colors)
            paths.append(_save(fig, out / "noise-accuracy-vs-step.png"))
        fig, ax = plt.subplots(figsize=(5, 3.4))
        pts = [(float(p), s["overall"]) for p, s in res["by_noise"].items() if s["n"]]
        if pts:
            ax.errorbar(
                [p for p, _ in pts],
                [s["mean"] for _, s in pts],
                yerr=[s["std"] or 0 for _, s in pts],
                marker="o",
                capsize=3,
                color=ALGO_COLORS["sgpo"],
                label=f"sgpo (n={max(s['n'] for _, s in pts)} per p)",
            )
        grpo = res["reference"].get("grpo", {}).get("overall")
        if grpo and grpo["n"]:
            ax.axhline(grpo["mean"], color=ALGO_COLORS["grpo"], ls="--", label=f"grpo (n={grpo['n']})")
            if grpo["std"]:
                ax.axhspan(
                    grpo["mean"] - grpo["std"],
                    grpo["mean"] + grpo["std"],
                    color=ALGO_COLORS["grpo"],
                    alpha=0.15,
                )
        ax.set(xlabel="judge noise p (fraction of random first errors)", ylabel="final held-out accuracy")
        ax.set_title("Judge noise: final accuracy (mean ± std)", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        paths.append(_save(fig, out / "noise-final-accuracy.png"))
        return paths
    if not res["curves"]:
        return paths
    fig = _accuracy_figure(res["curves"], "step", levels, f"{name}: held-out accuracy", ALGO_COLORS)
    paths.append(_save(fig, out / f"{name}-accuracy-vs-step.png"))
    if name != "offline":
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


# --------------------------------------------------------------------------------------------------------
# Entry point


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
        "with a complete run. Definitions: services/sgpo/launch/aggregate.py.\n",
    ]
    pngs: list[Path] = []
    for name in ("online", "offline", "noise"):
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
