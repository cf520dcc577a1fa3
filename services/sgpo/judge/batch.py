"""Judging a dataset of responses in-process, no server (the library of `sgpo judge FILE.jsonl`).

Reads rows `{problem, steps: [...]}` or `{problem, response}` (+ optional `reference_solution`, and
`token_char_starts` with `response`) from a file or `-` (stdin), and writes each row back as JSONL with
`steps`, `first_error_step`, `rts`, `reward` added (plus `judge_status`, `judge_reason`, `judge_backend`;
a failed judgement has nulls, never invented values). Order is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sgpo.judge.config import CascadeBackend, JudgeConfig, LlmBackend, SymbolicBackend


class RowError(ValueError):
    """A bad input row: the message names the line and the field."""


def resolve_config(config: Path | None = None, backend: str | None = None) -> JudgeConfig:
    """The [judge] config (the TOML file `config`, if given, and the environment), with `backend` (a backend
    type) replacing the configured backend type."""
    from sgpo.common.services import SERVICES
    from sgpo.common.settings import ConfigError, load_config

    cfg = load_config(JudgeConfig, config, known_sections=set(SERVICES) | {"judge"})
    name = backend
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
