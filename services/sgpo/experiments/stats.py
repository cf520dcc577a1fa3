"""The statistics of `sgpo experiment` studies: run folders -> curves, bands, crossings, targets.

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
- **target**: T = GRPO's final held-out accuracy, mean over GRPO seeds. For each SGPO seed, the
  steps (and completions) of its first crossing of T, divided by GRPO's steps (completions) at its final
  evaluation, mean over GRPO seeds. The mean ratio over SGPO seeds is reported only when every seed reached
  T; otherwise "not reached by k of n". Also reported: the crossing of SGPO's mean curve, and GRPO's own
  first crossing of T (the same rule applied to GRPO), so a plateaued GRPO curve is visible.
"""

from __future__ import annotations

import itertools
import math
import statistics
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.common.jsonl import read_jsonl
from sgpo.experiments.studies import ALGO_ORDER

EPS = 1e-9


TARGET_RATIO = 0.7


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
    dynamic_sampling: bool = False
    """The run's algorithm drops groups without signal (its batches hold no all-negative group)."""

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


def _dynamic_sampling(algo_table: dict[str, Any]) -> bool:
    """Whether the run's [algo] table (run.toml) trains with dynamic sampling, as sgpo.core decides it."""
    from sgpo.core import AlgoConfig, get_algorithm

    try:
        return get_algorithm(AlgoConfig.model_validate(algo_table)).uses_dynamic_sampling
    except ValueError:
        return False


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
        dynamic_sampling=_dynamic_sampling(doc.get("algo", {})),
    )


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
    """x ('step' or 'sampled') for the runs `sgpo` (a study's focus algorithm) to reach the final held-out
    accuracy of the runs `grpo` (its baseline), as a ratio to the baseline's x. The result's keys name them
    sgpo and grpo whatever the algorithms are."""
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


def level_key(level: str) -> tuple[int, str]:
    return (int(level), level) if level.isdigit() else (10**9, level)


def by_algo(runs: Iterable[RunData]) -> dict[str, list[RunData]]:
    out: dict[str, list[RunData]] = {}
    for r in runs:
        out.setdefault(r.algo, []).append(r)
    order = {a: i for i, a in enumerate(ALGO_ORDER)}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


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
    if runs and runs[0].dynamic_sampling:
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


# ---------------------------------------------------------------- bootstrap intervals (the tuned study)

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float | None
    high: float | None
    level: float
    resamples: int
    n: tuple[int, ...]
    """Sample sizes (one for a mean, two for a difference)."""

    @property
    def excludes_zero(self) -> bool:
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def fmt(self, digits: int = 3, sign: bool = False) -> str:
        f = f"{{:{'+' if sign else ''}.{digits}f}}"
        if self.low is None or self.high is None:
            return f.format(self.estimate) + " [—]"
        return f"{f.format(self.estimate)} [{f.format(self.low)}, {f.format(self.high)}]"

    def json(self) -> dict[str, Any]:
        return {
            "estimate": self.estimate,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "resamples": self.resamples,
            "n": list(self.n),
            "excludes_zero": self.excludes_zero,
        }


def _percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), q in [0, 1]."""
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _resampled_means(rng: Any, values: Sequence[float], resamples: int) -> list[float]:
    n = len(values)
    return [sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]


def bootstrap_mean(
    values: Sequence[float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap interval of the mean: `resamples` resamples of the values with replacement
    (same size), the (1 - level)/2 and (1 + level)/2 percentiles of their means. Seeded, so deterministic.
    With fewer than two values there is no interval (low = high = None)."""
    import random

    vals = [float(v) for v in values]
    if not vals:
        return Interval(float("nan"), None, None, level, 0, (0,))
    est = statistics.fmean(vals)
    if len(vals) < 2:
        return Interval(est, None, None, level, 0, (1,))
    means = sorted(_resampled_means(random.Random(seed), vals, resamples))
    a = (1 - level) / 2
    return Interval(est, _percentile(means, a), _percentile(means, 1 - a), level, resamples, (len(vals),))


def bootstrap_diff(
    a: Sequence[float],
    b: Sequence[float],
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Interval:
    """Percentile bootstrap interval of mean(a) - mean(b), unpaired: each resample draws a and b independently
    with replacement (seeds are not paired across algorithms: a seed fixes data order and sampling, which
    the algorithms then use differently). Deterministic for a seed; no interval when either has < 2 values."""
    import random

    xa, xb = [float(v) for v in a], [float(v) for v in b]
    if not xa or not xb:
        return Interval(float("nan"), None, None, level, 0, (len(xa), len(xb)))
    est = statistics.fmean(xa) - statistics.fmean(xb)
    if len(xa) < 2 or len(xb) < 2:
        return Interval(est, None, None, level, 0, (len(xa), len(xb)))
    rng = random.Random(seed)
    diffs = sorted(
        ma - mb
        for ma, mb in zip(
            _resampled_means(rng, xa, resamples), _resampled_means(rng, xb, resamples), strict=True
        )
    )
    q = (1 - level) / 2
    return Interval(
        est, _percentile(diffs, q), _percentile(diffs, 1 - q), level, resamples, (len(xa), len(xb))
    )


# ---------------------------------------------------------------- cost of a run


def judging_share(groups: Sequence[dict[str, Any]], step_times: Sequence[float]) -> dict[str, Any]:
    """The judge's share of an SGPO run, as bench/vs_trl.py measured it, from groups.jsonl (each row: its share
    of its chunk's generate and verify seconds, and its own Judge call's `judge_s`) and the trainer's step
    clock (metrics.jsonl `time_unix`):

    - `rollout_share`: judge / (generate + verify + judge) over all groups (the rollout path);
    - `wall_share`: judge seconds between the first and the last step over that wall-clock (what judging would
      cost if nothing overlapped it; rollout runs beside training)."""
    gen = sum(float(g.get("generate_s", 0.0)) for g in groups)
    ver = sum(float(g.get("verify_s", 0.0)) for g in groups)
    judged = [g for g in groups if "judge_s" in g]
    judge = sum(float(g["judge_s"]) for g in judged)
    path = gen + ver + judge
    out: dict[str, Any] = {
        "groups": len(groups),
        "judged": len(judged),
        "colored": sum(bool(g.get("colored")) for g in groups),
        "generate_s": gen,
        "verify_s": ver,
        "judge_s": judge,
        "rollout_share": judge / path if path else None,
        "wall_share": None,
    }
    if len(step_times) >= 2:
        lo, hi = min(step_times), max(step_times)
        window = sum(float(g["judge_s"]) for g in judged if lo < float(g.get("t", lo)) <= hi)
        out["wall_share"] = window / (hi - lo) if hi > lo else None
    return out
