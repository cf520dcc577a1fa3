"""Prompt streams: a JSONL dataset read once, validated row by row, replayed for epochs with seeded shuffles."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sgpo.core.errors import InvalidInputError


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    problem: str
    answer: str
    solution: str = ""


def load_prompts(path: Path) -> list[Prompt]:
    """Rows need `problem` (or `question`) and `answer`, as `sgpo data` writes them (`solution`, `unique_id` or
    `id` optional; other fields such as `level` are ignored); a bad row is an error naming its line."""
    if not path.is_file():
        raise InvalidInputError("dataset", f"{path} does not exist")
    prompts: list[Prompt] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InvalidInputError("dataset", f"{path}:{lineno} is not JSON: {e}") from None
            problem = row.get("problem", row.get("question")) if isinstance(row, dict) else None
            answer = row.get("answer") if isinstance(row, dict) else None
            if (
                not isinstance(problem, str)
                or not problem.strip()
                or answer is None
                or str(answer).strip() == ""
            ):
                raise InvalidInputError(
                    "dataset",
                    f"{path}:{lineno} needs a non-empty `problem` and `answer`; convert MATH, GSM8K or other "
                    "data into such rows with `sgpo data --input FILE --out OUT.jsonl`",
                )
            pid = str(row.get("unique_id") or row.get("id") or f"{path.stem}-{lineno}")
            prompts.append(Prompt(pid, problem, str(answer), str(row.get("solution") or "")))
    if not prompts:
        raise InvalidInputError("dataset", f"{path} has no rows")
    return prompts


def iterate_epochs(
    prompts: list[Prompt], epochs: int, shuffle: bool, seed: int
) -> Iterator[tuple[int, Prompt]]:
    """(epoch, prompt) pairs; epochs = 0 repeats forever."""
    epoch = 0
    while epochs == 0 or epoch < epochs:
        order = list(prompts)
        if shuffle:
            random.Random(f"{seed}:{epoch}").shuffle(order)
        for p in order:
            yield epoch, p
        epoch += 1
