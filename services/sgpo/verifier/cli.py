"""`sgpo verify FILE.jsonl` (or `-` for stdin): score {gold, pred, ...} rows and write them back as JSONL
with `status` (correct | wrong | unscorable), `extracted` and `reason` added; a summary goes to stderr."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

HELP = "score {gold, pred} JSONL rows with the math verifier (status, extracted, reason added)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="JSONL file of {gold, pred, [tolerance], ...} rows, or - for stdin")
    p.add_argument("-o", "--output", type=Path, help="write JSONL here instead of stdout")
    p.add_argument("--config", type=Path, help="TOML file; its [verifier] table is used")
    p.add_argument("--workers", type=int, help="worker processes for symbolic checks (default 2)")
    p.add_argument("--deadline-s", type=float, help="per-item budget for a symbolic check (default 5)")
    p.add_argument(
        "--fallback",
        choices=["math_verify", "last_number", "none"],
        help="what to do when a response has no answer marker (default math_verify)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="rows sent to the verifier at once")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


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


def run(args: argparse.Namespace) -> int:
    from sgpo.common.settings import ConfigError, load_config
    from sgpo.serve import SERVICES
    from sgpo.verifier.config import VerifierConfig

    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1; got {args.batch_size}", file=sys.stderr)
        return 2
    overrides = {
        k: v
        for k, v in {
            "workers": args.workers,
            "deadline_s": args.deadline_s,
            "fallback": args.fallback,
        }.items()
        if v is not None
    }
    try:
        cfg = load_config(
            VerifierConfig, args.config, known_sections=set(SERVICES) | {"verifier"}, **overrides
        )
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        if args.input == "-":
            rows = read_rows(sys.stdin, "<stdin>")
        else:
            path = Path(args.input)
            if not path.is_file():
                print(
                    f"error: input file {path} does not exist; pass a JSONL file or - for stdin",
                    file=sys.stderr,
                )
                return 2
            with path.open(encoding="utf-8") as f:
                rows = read_rows(f, str(path))
    except RowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:
        print(f"error: {args.input} is not UTF-8 text ({e.reason}); write JSONL as UTF-8", file=sys.stderr)
        return 2

    out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        _verify_rows(rows, cfg, args.batch_size, out, progress=not args.no_progress)
    finally:
        if args.output:
            out.close()
    return 0


def _verify_rows(rows: list[Row], cfg: Any, batch_size: int, out: IO[str], progress: bool) -> Counter[str]:
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
