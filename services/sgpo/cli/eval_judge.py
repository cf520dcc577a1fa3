"""`sgpo eval-judge --data processbench/gsm8k.json --backend symbolic`: ProcessBench scoring of a backend.

Prints one JSON object (and writes it with --output); a summary line with the published figures goes to
stderr. The scores are `sgpo.judge.evaluate.compute_processbench_scores`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sgpo.cli.judge import _progress, add_config_arguments

HELP = "score a judge backend on ProcessBench (first-error accuracy and F1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", type=Path, required=True, help="a ProcessBench split (JSON array), e.g. gsm8k.json"
    )
    p.add_argument("--limit", type=int, help="score only the first N items")
    p.add_argument("-o", "--output", type=Path, help="also write the JSON result to this file")
    p.add_argument(
        "--base-url",
        help="the LLM endpoint (llm or cascade backend), e.g. http://127.0.0.1:8000/v1; overrides base_url",
    )
    p.add_argument("--model", help="the model name sent to the LLM endpoint; overrides model")
    add_config_arguments(p)


def with_endpoint(cfg: Any, base_url: str | None, model: str | None) -> Any:
    """`cfg` with its LLM stage pointed at `base_url` / `model` (when given)."""
    from sgpo.common.settings import ConfigError
    from sgpo.judge.config import CascadeBackend, LlmBackend

    update = {k: v for k, v in (("base_url", base_url), ("model", model)) if v}
    if not update:
        return cfg
    backend = cfg.backend
    if isinstance(backend, LlmBackend):
        return cfg.model_copy(update={"backend": backend.model_copy(update=update)})
    if isinstance(backend, CascadeBackend):
        llm = backend.llm.model_copy(update=update)
        return cfg.model_copy(update={"backend": backend.model_copy(update={"llm": llm})})
    raise ConfigError(
        f"--base-url / --model need an LLM backend; the backend is {backend.type!r}: add --backend llm"
    )


def run(args: argparse.Namespace) -> int:
    from sgpo.common.settings import ConfigError
    from sgpo.judge.batch import RowError, default_workers, resolve_config
    from sgpo.judge.evaluate import (
        PUBLISHED_F1,
        DataError,
        compute_processbench_scores,
        load_processbench,
    )
    from sgpo.judge.judge import build_judge
    from sgpo.judge.types import JudgeItem

    try:
        cfg = resolve_config(args.config, args.backend)
        cfg = with_endpoint(cfg, args.base_url, args.model)
        workers = default_workers(cfg, args.workers)
        items = load_processbench(args.data)
        if args.limit is not None:
            if args.limit < 1:
                raise DataError(f"--limit must be >= 1; got {args.limit}")
            items = items[: args.limit]
    except (ConfigError, RowError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    judge = build_judge(cfg)

    def predict(x: dict[str, Any]) -> int | None:
        (j,) = judge.judge(x["problem"], "", [JudgeItem(steps=tuple(x["steps"]))])
        return j.first_error_step if j.status == "ok" else None

    start = time.perf_counter()
    preds: list[int | None] = []
    try:
        with _progress(args.no_progress) as progress, ThreadPoolExecutor(workers) as pool:
            task = progress.add_task(f"ProcessBench {args.data.stem} ({cfg.backend.type})", total=len(items))
            for p in pool.map(predict, items):
                preds.append(p)
                progress.advance(task)
        stats = judge.stats()
    finally:
        judge.close()
    seconds = time.perf_counter() - start
    scores = compute_processbench_scores([x["label"] for x in items], preds)
    result: dict[str, Any] = {
        "data": str(args.data),
        "split": args.data.stem,
        "backend": cfg.backend.type,
        **scores,
        "seconds": round(seconds, 3),
        "items_per_s": round(len(items) / seconds, 1) if seconds > 0 else None,
        "backend_stats": stats,
    }
    if stats.get("cascade_judged"):
        result["cascade_llm_calls_saved_rate"] = stats["cascade_llm_calls_saved"] / stats["cascade_judged"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    split = args.data.stem.lower()
    published = ", ".join(f"{k} {v[split]}" for k, v in PUBLISHED_F1.items() if split in v)
    print(
        f"ProcessBench {args.data.stem}: {cfg.backend.type} F1 {100 * float(scores['f1']):.1f} "
        f"(error acc {100 * float(scores['error_acc']):.1f}%, correct acc {100 * float(scores['correct_acc']):.1f}%)"
        + (f"; published F1: {published}" if published else ""),
        file=sys.stderr,
    )
    return 0
