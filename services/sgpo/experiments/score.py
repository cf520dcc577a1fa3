"""Scoring a saved model on a run's held-out problems, outside the run: `sgpo experiment score`.

The same harness as `sgpo eval` (`sgpo.tasks.evaluate.evaluate`: the hf engine, the verifier in-process,
avg@k and pass@k, per-item records), given the problems of a run folder's eval_problems.jsonl instead of a
benchmark file, so that a model trained elsewhere (TRL's GRPOTrainer) and a run's own checkpoints are scored on
exactly the problems the runs evaluated on. Used by the tuned study for the greedy accuracy of each final
checkpoint beside the run's avg@4, and for the TRL runs' curves.

The result is an eval.jsonl-like record: `overall` (mean over problems of the fraction of the k samples that
are correct: the runs' own definition), `accuracy` by level, `samples`, `temperature`, `split`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from sgpo.common.jsonl import read_jsonl


def latest_checkpoint(run_dir: Path) -> tuple[int, Path]:
    """The newest `checkpoints/step-N` of a run folder (a Hugging Face model folder); FileNotFoundError if none."""
    from sgpo.trainer.checkpoint import list_checkpoints

    found = list_checkpoints(run_dir)
    if not found:
        raise FileNotFoundError(f"{run_dir} has no checkpoints/step-N")
    return found[-1]


def load_problems(path: Path) -> list[Any]:
    """eval_problems.jsonl (arith rows: problem, answer, steps, unique_id) as benchmark items, level = steps."""
    from sgpo.tasks.benchmarks import BenchmarkItem

    items = []
    for i, r in enumerate(read_jsonl(path)):
        level = str(r.get("steps", r.get("level", "")))
        items.append(
            BenchmarkItem(
                id=str(r.get("unique_id", r.get("id", i))),
                problem=r["problem"],
                answer=str(r["answer"]),
                level=level,
                solution=r.get("solution", ""),
            )
        )
    if not items:
        raise ValueError(f"{path} holds no problems")
    return items


def score_model(
    model: Path,
    problems: Path,
    out: Path,
    *,
    k: int = 1,
    temperature: float = 0.0,
    max_tokens: int = 160,
    device: str = "auto",
    seed: int = 0,
    threads: int | None = 1,
    console: Any = None,
) -> dict[str, Any]:
    """Score `model` on `problems`; write `out` (the harness's result JSON, items beside it) and return the
    eval record."""
    from rich.console import Console

    from sgpo.tasks.evaluate import EvalOptions, evaluate

    items = load_problems(problems)
    k = 1 if temperature == 0 else k
    opts = EvalOptions(
        model=str(model),
        model_path=model,
        benchmarks=["arith"],
        k=k,
        pass_k=sorted({1, k}),
        temperature=temperature,
        top_p=1.0,
        max_tokens=max_tokens,
        limit=None,
        engine="hf",
        device=device,
        dtype="float32",
        batch_size=64,
        seed=seed,
        out=out,
        data_dir=problems.parent,
        prompt_template="auto",
        threads=threads,
        verifier_workers=2,
        progress=False,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    result = evaluate(opts, {"arith": items}, console or Console(stderr=True))
    return eval_record(result, k, temperature, problems)


def eval_record(result: dict[str, Any], k: int, temperature: float, problems: Path) -> dict[str, Any]:
    """The harness result as an eval.jsonl record (overall = mean over problems of correct / k)."""
    metrics = result["results"]["arith"]
    by_level = {lv: float(m[f"avg@{k}"]) for lv, m in metrics.get("by_level", {}).items()}
    return {
        "overall": float(metrics[f"avg@{k}"]),
        "accuracy": by_level,
        "n": int(metrics["problems"]),
        "samples": k,
        "temperature": temperature,
        "problems": str(problems),
        "split": split_of(problems.parent),
        "mean_tokens": float(metrics.get("mean_completion_tokens", 0.0)),
        "seconds": float(result.get("seconds", 0.0)),
    }


def split_of(run_dir: Path) -> str | None:
    """The held-out split a run folder evaluated on (summary.json, else its eval.jsonl records)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("eval_split"):
            return str(summary["eval_split"])
    except (OSError, ValueError):
        pass
    for e in read_jsonl(run_dir / "eval.jsonl"):
        if e.get("split"):
            return str(e["split"])
    return None


def run_max_tokens(run_dir: Path, default: int = 160) -> int:
    """The run's completion cap (run.toml [orchestrator.sampling] max_tokens): the held-out evaluation's too."""
    try:
        doc = tomllib.loads((run_dir / "run.toml").read_text())
        return int(doc["orchestrator"]["sampling"]["max_tokens"])
    except (OSError, KeyError, ValueError):
        return default


def score_run(
    run_dir: Path,
    out_dir: Path,
    *,
    k: int,
    temperature: float,
    device: str = "auto",
    model: Path | None = None,
    problems: Path | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Score a run's newest checkpoint (or `model`) on its eval_problems.jsonl (or `problems`); write
    OUT_DIR/score.json (the eval record plus which model and step) and OUT_DIR/summary.json (complete)."""
    step: int | None = None
    if model is None:
        step, model = latest_checkpoint(run_dir)
    problems = problems or run_dir / "eval_problems.jsonl"
    out_dir.mkdir(parents=True, exist_ok=True)
    record = score_model(
        model,
        problems,
        out_dir / "eval.json",
        k=k,
        temperature=temperature,
        max_tokens=run_max_tokens(run_dir),
        device=device,
        console=console,
    )
    record.update(run=str(run_dir), model=str(model), step=step)
    (out_dir / "score.json").write_text(json.dumps(record, indent=2))
    (out_dir / "summary.json").write_text(json.dumps({"interrupted": False, "score": record}, indent=2))
    return record
