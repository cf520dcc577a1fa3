"""Hand-made run folders, written the way `sgpo train` writes them (run.toml, eval/metrics/groups JSONL,
summary.json), for the aggregation and resumability tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

B, G = 4, 2  # groups per step, completions per group: small numbers that keep the arithmetic checkable


def write_run(
    folder: Path,
    algo: str,
    seed: int,
    accs: Sequence[tuple[int, float]],
    *,
    levels: dict[str, Sequence[float]] | None = None,
    sampled: Sequence[int | None] | None = None,
    group_cost: int = B * G,
    steps: int | None = None,
    all_negative: float = 0.5,
    noise: float = 0.0,
    interrupted: bool | None = False,
) -> Path:
    """A run folder. `accs`: (step, overall held-out accuracy) per evaluation. `sampled`: each evaluation's
    `sampled` field (None: left out, as in runs made before it existed). `group_cost`: completions sampled per
    step consumed (B x G without dropped groups). `interrupted=None`: no summary.json (a crashed run)."""
    folder.mkdir(parents=True, exist_ok=True)
    judge = f"\n[judge]\nnoise = {noise}\nnoise_seed = {seed}\n" if noise else ""
    (folder / "run.toml").write_text(
        f'[algo]\nalgo = "{algo}"\ngroup_size = {G}\n\n[trainer]\nbatch_groups = {B}\nseed = {seed}\n'
        f"\n[orchestrator]\nseed = {seed}\nbatch_groups = {B}\n{judge}"
    )
    last = steps if steps is not None else max(s for s, _ in accs)
    with (folder / "eval.jsonl").open("w") as f:
        for i, (step, acc) in enumerate(accs):
            rec: dict[str, object] = {
                "step": step,
                "overall": acc,
                "accuracy": {lv: vals[i] for lv, vals in (levels or {}).items()},
                "n": 100,
                "policy_versions": [step],
            }
            if sampled is not None and sampled[i] is not None:
                rec["sampled"] = sampled[i]
            f.write(json.dumps(rec) + "\n")
    with (folder / "metrics.jsonl").open("w") as f:
        for step in range(1, last + 1):
            f.write(json.dumps({"step": step, "frac_all_negative": all_negative, "reward_mean": 0.1}) + "\n")
    with (folder / "groups.jsonl").open("w") as f:
        for step in range(1, last + 1):
            row = {"kind": "mixed", "colored": False, "accuracy": 0.5, "sampled": step * group_cost}
            f.writelines(json.dumps(row) + "\n" for _ in range(B))
    if interrupted is not None:
        (folder / "summary.json").write_text(json.dumps({"interrupted": interrupted, "steps": last}))
    return folder


def write_plan(out: Path, studies: dict[str, list[dict[str, object]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"studies": {name: {"params": {}, "runs": runs} for name, runs in studies.items()}}
    (out / "experiment.json").write_text(json.dumps(doc))
