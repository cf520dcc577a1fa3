"""`sgpo judge FILE.jsonl --backend B`: judge a dataset of responses in-process, no server.

Reads rows `{problem, steps: [...]}` or `{problem, response}` (+ optional `reference_solution`, and
`token_char_starts` with `response`) from a file or `-` (stdin), and writes each row back as JSONL with
`steps`, `first_error_step`, `rts`, `reward` added (plus `judge_status`, `judge_reason`, `judge_backend`;
a failed judgement has nulls, never invented values). Order is kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from sgpo.judge.config import BACKEND_TYPES, CascadeBackend, JudgeConfig, LlmBackend, SymbolicBackend

HELP = "judge a JSONL file of responses (first wrong step, rts, colored reward) without a server"


class RowError(ValueError):
    """A bad input row: the message names the line and the field."""


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


def resolve_config(args: argparse.Namespace) -> JudgeConfig:
    """The [judge] config (file + env), with --backend choosing the backend type."""
    from sgpo.common.settings import ConfigError, load_config
    from sgpo.serve import SERVICES

    cfg = load_config(JudgeConfig, args.config, known_sections=set(SERVICES) | {"judge"})
    name = getattr(args, "backend", None)
    current = cfg.backend
    if name is None or name == current.type:
        return cfg
    backend: Any
    if name == "symbolic":
        backend = current.symbolic if isinstance(current, CascadeBackend) else SymbolicBackend()
    elif name == "llm":
        backend = current.llm if isinstance(current, CascadeBackend) else LlmBackend()
    elif name == "cascade":
        backend = CascadeBackend(
            symbolic=current if isinstance(current, SymbolicBackend) else SymbolicBackend(),
            llm=current if isinstance(current, LlmBackend) else LlmBackend(),
        )
    else:
        raise ConfigError(
            '--backend prm needs a model: give --config with [judge.backend] type = "prm" and model_path, '
            "or set SGPO_JUDGE__BACKEND__TYPE=prm and SGPO_JUDGE__BACKEND__MODEL_PATH"
        )
    return cfg.model_copy(update={"backend": backend})


def default_workers(cfg: JudgeConfig, given: int | None) -> int:
    if given is not None:
        if given < 1:
            raise RowError(f"--workers must be >= 1; got {given}")
        return given
    b = cfg.backend
    if isinstance(b, LlmBackend):
        return b.max_concurrency
    return b.llm.max_concurrency if isinstance(b, CascadeBackend) else 1


def parse_row(line: str, lineno: int) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise RowError(f"line {lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise RowError(f"line {lineno}: must be a JSON object with `problem` and `steps` or `response`")
    if not isinstance(row.get("problem"), str):
        raise RowError(f"line {lineno}: field `problem` must be a string (the problem text)")
    has_steps, has_response = "steps" in row, "response" in row
    if has_steps == has_response:
        raise RowError(
            f"line {lineno}: give exactly one of `steps` (a list of strings) or `response` (a string)"
        )
    if has_steps and not (isinstance(row["steps"], list) and all(isinstance(s, str) for s in row["steps"])):
        raise RowError(f"line {lineno}: field `steps` must be a list of strings")
    if has_response and not isinstance(row["response"], str):
        raise RowError(f"line {lineno}: field `response` must be a string")
    if not isinstance(row.get("reference_solution", ""), str):
        raise RowError(f"line {lineno}: field `reference_solution` must be a string")
    offsets = row.get("token_char_starts", [])
    if not (
        isinstance(offsets, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in offsets)
    ):
        raise RowError(f"line {lineno}: field `token_char_starts` must be a list of integers")
    return row


def read_rows(stream: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in enumerate(stream, 1):
        if line.strip():
            yield lineno, parse_row(line, lineno)


def judge_row(judge: Any, lineno: int, row: dict[str, Any]) -> dict[str, Any]:
    from sgpo.core import InvalidInputError, compute_colored_reward, judgement_rts
    from sgpo.judge.types import JudgeItem

    item = JudgeItem(
        response=row.get("response", ""),
        steps=tuple(row.get("steps", ())),
        token_char_starts=tuple(row.get("token_char_starts", ())),
    )
    try:
        (j,) = judge.judge(row["problem"], row.get("reference_solution", ""), [item])
    except InvalidInputError as e:
        raise RowError(f"line {lineno}: {e.field.removeprefix('items[0].')}: {e.message}") from None
    ok = j.status == "ok"
    rts = judgement_rts(j, judge.coloring.rts_unit) if ok else None
    return {
        **row,
        "steps": list(j.steps),
        "first_error_step": j.first_error_step if ok else None,
        "rts": rts,
        "reward": compute_colored_reward(rts, judge.coloring) if rts is not None else None,
        "judge_status": j.status,
        "judge_reason": j.reason,
        "judge_backend": j.backend,
    }


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
    from sgpo.judge.judge import build_judge

    try:
        cfg = resolve_config(args)
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
