"""Scoring {gold, pred, ...} JSONL rows (the library of `sgpo verify FILE.jsonl`): rows are read, checked and
written back as JSONL with `status` (correct | wrong | unscorable), `extracted` and `reason` added; a summary
goes to stderr."""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from typing import IO, Any


class RowError(ValueError):
    """A bad input row; the message names the line and the field."""


def _tolerance(value: Any, where: str) -> float | list[float] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in values
    ):
        raise RowError(f"{where}: 'tolerance' must be a non-negative number or a list of them; got {value!r}")
    return [float(v) for v in values] if isinstance(value, list) else float(value)


Row = tuple[dict[str, Any], str, str, "float | list[float] | None"]


def read_rows(stream: IO[str], name: str) -> list[Row]:
    """(row, gold, pred, tolerance) for every non-blank line; raises RowError on the first bad one."""
    rows = []
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RowError(
                f"{where}: not valid JSON ({e.msg} at column {e.colno}); one object per line"
            ) from None
        if not isinstance(row, dict):
            raise RowError(f'{where}: each line must be a JSON object like {{"gold": ..., "pred": ...}}')
        texts = []
        for key in ("gold", "pred"):
            if key not in row:
                raise RowError(f"{where}: field '{key}' is missing; each row needs 'gold' and 'pred' strings")
            value = row[key]
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)  # {"gold": 36} is a fine way to write an answer
            if not isinstance(value, str):
                raise RowError(f"{where}: field '{key}' must be a string; got {type(value).__name__}")
            texts.append(value)
        rows.append((row, texts[0], texts[1], _tolerance(row.get("tolerance"), where)))
    return rows


def verify_rows(rows: list[Row], cfg: Any, batch_size: int, out: IO[str], progress: bool) -> Counter[str]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from sgpo.verifier.verifier import MathVerifier

    counts: Counter[str] = Counter()
    start = time.monotonic()
    console = Console(stderr=True)
    with (
        MathVerifier(cfg) as verifier,
        Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not progress,
        ) as bar,
    ):
        task = bar.add_task("verify", total=len(rows))
        for i in range(0, len(rows), batch_size):
            chunk = rows[i : i + batch_size]
            verdicts = verifier.verify_batch(
                [(gold, pred) for _, gold, pred, _ in chunk], tolerances=[tol for *_, tol in chunk]
            )
            for (row, *_), v in zip(chunk, verdicts, strict=True):
                row.update(status=v.status, extracted=v.extracted, reason=v.reason)
                line = json.dumps(row, ensure_ascii=False)
                if not line.isascii():
                    try:
                        line.encode("utf-8")
                    except UnicodeEncodeError:  # lone surrogates from "\ud800" escapes
                        line = json.dumps(row)
                out.write(line + "\n")
                counts[v.status] += 1
            out.flush()
            bar.advance(task, len(chunk))
    elapsed = time.monotonic() - start
    console.print(
        f"verified {len(rows)} rows in {elapsed:.1f}s: correct {counts['correct']}, "
        f"wrong {counts['wrong']}, unscorable {counts['unscorable']}",
        highlight=False,
    )
    return counts
