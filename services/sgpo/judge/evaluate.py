"""ProcessBench scoring of a judge backend (the library of `sgpo eval-judge`).

ProcessBench (Zheng et al. 2024): each item has the steps of a solution and `label`, the 0-based index of its
earliest wrong step (-1: correct). Scores: accuracy of the exact index on erroneous items, accuracy of -1 on
correct items, F1 = their harmonic mean; a failed (unparseable) judgement counts as wrong. Prints one JSON
object (and writes it with --output); a summary line with the published figures goes to stderr.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# ProcessBench paper, Table 3 (F1, GSM8K / MATH), as listed in ../shared/data/README.md.
PUBLISHED_F1: dict[str, dict[str, float]] = {
    "Qwen2.5-7B-Instruct": {"gsm8k": 36.5, "math": 36.6},
    "Qwen2.5-Math-7B-PRM800K": {"gsm8k": 68.2, "math": 62.6},
    "Qwen2.5-72B-Instruct": {"gsm8k": 76.2, "math": 61.8},
    "GPT-4o-0806": {"gsm8k": 79.2, "math": 63.6},
    "QwQ-32B-Preview": {"gsm8k": 88.0, "math": 78.7},
    "o1-mini": {"gsm8k": 93.2, "math": 88.9},
}


class DataError(ValueError):
    """The data file is not ProcessBench-shaped; the message names the item and field."""


def load_processbench(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(
            f"--data {path} does not exist; pass a ProcessBench split such as processbench/gsm8k.json"
        )
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"--data {path} is not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(items, list):
        raise DataError(f"--data {path} must hold a JSON array of {{problem, steps, label}} items")
    for i, x in enumerate(items):
        where = f"item {i}" + (f" ({x.get('id')})" if isinstance(x, dict) and x.get("id") else "")
        if not isinstance(x, dict):
            raise DataError(f"{where} must be an object")
        if not isinstance(x.get("problem"), str):
            raise DataError(f"{where}: `problem` must be a string")
        steps = x.get("steps")
        if not (isinstance(steps, list) and steps and all(isinstance(s, str) and s.strip() for s in steps)):
            raise DataError(f"{where}: `steps` must be a non-empty list of non-empty strings")
        label = x.get("label")
        if not (isinstance(label, int) and not isinstance(label, bool) and -1 <= label < len(steps)):
            raise DataError(
                f"{where}: `label` must be -1 or a step index in [0, {len(steps) - 1}]; got {label!r}"
            )
    return items


def compute_processbench_scores(labels: Sequence[int], preds: Sequence[int | None]) -> dict[str, float | int]:
    """Exact-index accuracy on erroneous items, -1 accuracy on correct ones, F1; a None prediction is wrong."""
    if len(labels) != len(preds):
        raise ValueError(f"need one prediction per label; got {len(preds)} for {len(labels)}")
    err = [(y, p) for y, p in zip(labels, preds, strict=True) if y != -1]
    cor = [(y, p) for y, p in zip(labels, preds, strict=True) if y == -1]
    err_acc = sum(p == y for y, p in err) / len(err) if err else 0.0
    cor_acc = sum(p == -1 for _, p in cor) / len(cor) if cor else 0.0
    f1 = 2 * err_acc * cor_acc / (err_acc + cor_acc) if err_acc + cor_acc > 0 else 0.0
    return {
        "n": len(labels),
        "n_erroneous": len(err),
        "n_correct": len(cor),
        "error_acc": err_acc,
        "correct_acc": cor_acc,
        "f1": f1,
        "failed": sum(p is None for p in preds),
        "early": sum(p is not None and 0 <= p < y for y, p in err),  # flagged before the true first error
        "late": sum(p is not None and p > y for y, p in err),
        "missed": sum(p == -1 for _, p in err),
    }
