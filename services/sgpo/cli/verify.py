"""`sgpo verify FILE.jsonl` (or `-` for stdin): score {gold, pred, ...} rows and write them back as JSONL
with `status` (correct | wrong | unscorable), `extracted` and `reason` added; a summary goes to stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def run(args: argparse.Namespace) -> int:
    from sgpo.common.services import SERVICES
    from sgpo.common.settings import ConfigError, load_config
    from sgpo.verifier.batch import RowError, read_rows, verify_rows
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
        verify_rows(rows, cfg, args.batch_size, out, progress=not args.no_progress)
    finally:
        if args.output:
            out.close()
    return 0
