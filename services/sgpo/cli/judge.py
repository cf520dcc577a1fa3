"""`sgpo judge FILE.jsonl --backend B`: judge a dataset of responses in-process, no server.

Rows and output are described in `sgpo.judge.batch`; a summary line goes to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sgpo.judge.config import BACKEND_TYPES

HELP = "judge a JSONL file of responses (first wrong step, rts, colored reward) without a server"


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKEND_TYPES, help="override the configured backend type")
    p.add_argument("--config", type=Path, help="TOML file; its [judge] table configures the backend")
    p.add_argument(
        "--workers", type=int, help="rows judged at once (default: the LLM's max_concurrency, else 1)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="JSONL file, or - for stdin")
    p.add_argument("-o", "--output", default="-", help="output JSONL file (default: stdout)")
    p.add_argument("--rts-unit", choices=("tokens", "steps"), help="override [algo] rts_unit")
    add_config_arguments(p)


def _progress(disabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=disabled,
        transient=False,
    )


def run(args: argparse.Namespace) -> int:
    from sgpo.common.settings import ConfigError
    from sgpo.judge.batch import RowError, default_workers, judge_row, read_rows, resolve_config
    from sgpo.judge.judge import build_judge

    try:
        cfg = resolve_config(args.config, args.backend)
        if args.rts_unit:
            cfg = cfg.model_copy(update={"algo": cfg.algo.model_copy(update={"rts_unit": args.rts_unit})})
        workers = default_workers(cfg, args.workers)
    except (ConfigError, RowError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.input != "-" and not Path(args.input).is_file():
        print(
            f"error: input file {args.input} does not exist; pass a JSONL file or - for stdin",
            file=sys.stderr,
        )
        return 2
    total = None
    if args.input != "-":
        with open(args.input, encoding="utf-8") as f:
            total = sum(1 for line in f if line.strip())
    judge = build_judge(cfg)
    src = sys.stdin if args.input == "-" else open(args.input, encoding="utf-8")  # noqa: SIM115
    dst = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    counts = {"ok": 0, "failed": 0}
    try:
        with _progress(args.no_progress) as progress, ThreadPoolExecutor(workers) as pool:
            task = progress.add_task(f"judging ({cfg.backend.type})", total=total)
            rows = read_rows(src)
            while True:
                chunk = [r for _, r in zip(range(max(64, 4 * workers)), rows, strict=False)]
                if not chunk:
                    break
                for out in pool.map(lambda r: judge_row(judge, *r), chunk):
                    counts[out["judge_status"]] += 1
                    dst.write(json.dumps(out, ensure_ascii=False) + "\n")
                    progress.advance(task)
                dst.flush()
        stats = judge.stats()
    except RowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        judge.close()
        if src is not sys.stdin:
            src.close()
        if dst is not sys.stdout:
            dst.close()
    n = counts["ok"] + counts["failed"]
    summary = f"judged {n} rows ({counts['failed']} failed)"
    if "llm_asked" in stats:
        summary += f"; LLM asked {stats['llm_asked']} times ({stats['llm_cache_hits']} from cache)"
    if stats.get("cascade_judged"):
        saved = stats["cascade_llm_calls_saved"]
        summary += f"; the cascade saved {saved} LLM calls ({100 * saved / stats['cascade_judged']:.1f}%)"
    print(summary, file=sys.stderr)
    return 0
