"""Benchmark loaders for `sgpo eval`: the reference data in ../shared/data, read in place, and the arith test split.

Each loader returns `BenchmarkItem`s whose `answer` is the gold answer in the form the verifier compares
(`sgpo.verifier.MathVerifier`), so per-benchmark answer formats are settled here, once:

- GSM8K: the number after the solution's `#### `, thousands commas dropped ("1,000" -> "1000").
- AIME: zero-padded strings ("025") become plain integers ("25"), the way a model writes them.
- AMC23: floats (27.0) become integers ("27") when they are whole.
- Minerva: the file has no answer field; the gold is the last `\\boxed{}` of the reference solution, as in the
  Qwen2.5-Math harness the file comes from.
- OlympiadBench: `final_answer` is a list holding one string, itself possibly several answers ("1,3,5",
  "$69$,$84$"); `$` delimiters and a sentence's final period are dropped, the pieces joined with ", ". `error` is a numeric tolerance
  ("1e-1", passed to the verifier); `unit` is the answer's unit, which the official prompt keeps out of the
  box, so it is kept out of the gold and recorded on the item.
- arith: `sgpo.tasks.arith.generate_split("test", ...)` with the tiny preset's eval levels and spec; the
  level is the number of steps.

A file that is missing or malformed raises `BenchmarkDataError` naming the path and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

BenchmarkName = Literal["math500", "gsm8k", "aime24", "aime25", "amc23", "minerva", "olympiadbench", "arith"]

# Where each file lives under the data folder (../shared/data; see its README.md).
DATA_FILES: dict[BenchmarkName, str] = {
    "math500": "prm800k/math500_test.jsonl",
    "gsm8k": "gsm8k/test.jsonl",
    "aime24": "competition/aime24_test.jsonl",
    "aime25": "competition/aime25_test.jsonl",
    "amc23": "competition/amc23_test.jsonl",
    "minerva": "competition/minerva_math_test.jsonl",
    "olympiadbench": "competition/olympiadbench_test.jsonl",
}
BENCHMARKS: tuple[BenchmarkName, ...] = (*DATA_FILES, "arith")

Tolerance = float | tuple[float, ...] | None

_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_INTEGER = re.compile(r"^[-+]?\d+$")


class BenchmarkDataError(ValueError):
    """A benchmark file that is missing or does not hold what its loader expects; the message says what to do."""


@dataclass(frozen=True)
class BenchmarkItem:
    """One problem: what the model is asked, the gold answer the verifier compares, and where it came from."""

    id: str
    problem: str
    answer: str
    """The gold answer, normalized for the verifier (see the module docstring)."""
    level: str = ""
    """Difficulty where the data has one (MATH level "1".."5", arith steps); empty otherwise."""
    subject: str = ""
    """Subject or subfield where the data has one."""
    solution: str = ""
    """The reference solution text where the data has one (the gold test feeds it through the scorer)."""
    tolerance: Tolerance = None
    """Absolute numeric tolerance (one per answer of a list), OlympiadBench's `error`."""
    unit: str = ""
    """The answer's unit (OlympiadBench), not part of `answer`."""


def default_data_dir() -> Path:
    """../shared/data next to the checkout (`<repo>/../shared/data`), where the reference data lives."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


def benchmark_path(name: BenchmarkName, data_dir: Path) -> Path:
    return Path(data_dir) / DATA_FILES[name]


# ---------------------------------------------------------------- answer normalization


def strip_dollars(s: str) -> str:
    """Drop unescaped `$` (math-mode delimiters left in a gold answer: "$69$,$84$", "x+$ $y"); keep `\\$`."""
    return _UNESCAPED_DOLLAR.sub("", s).strip()


def integer_answer(s: str) -> str:
    """An integer string without zero padding ("025" -> "25", "-007" -> "-7"); other text unchanged."""
    s = s.strip()
    return str(int(s)) if _INTEGER.match(s) else s


def number_answer(value: Any) -> str:
    """A JSON number as an answer: whole floats without ".0" (27.0 -> "27"), other values as written."""
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return integer_answer(str(value))


def gsm8k_answer(solution: str) -> str:
    """The number after the last `#### ` of a GSM8K solution, without thousands commas."""
    marker = solution.rfind("####")
    if marker == -1:
        raise ValueError("the answer has no '#### N' line")
    answer = solution[marker + 4 :].strip().replace(",", "")
    if not answer:
        raise ValueError("the '####' line is empty")
    return answer


def olympiad_answer(final_answer: Any) -> str:
    """OlympiadBench's `final_answer` list as one gold string: `$` dropped, several answers joined by ", "."""
    if isinstance(final_answer, str):
        final_answer = [final_answer]
    if not isinstance(final_answer, list) or not final_answer:
        raise ValueError(f"final_answer must be a non-empty list of strings; got {final_answer!r:.80}")
    # "$(-\\infty, 0) \\cup\\{1\\}$." ends a sentence; the period is not part of the answer
    parts = [strip_dollars(str(a)).rstrip(". ") for a in final_answer]
    return ", ".join(p for p in parts if p)


def olympiad_tolerance(error: Any) -> Tolerance:
    """OlympiadBench's `error` field: None, a number, or a string of one or more comma-separated numbers."""
    if error is None or error == "":
        return None
    if isinstance(error, int | float) and not isinstance(error, bool):
        return float(error)
    values = tuple(float(x) for x in str(error).split(","))
    return values[0] if len(values) == 1 else values


# ---------------------------------------------------------------- file reading


def _read_jsonl(path: Path, name: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) per non-blank line; a missing file or a bad line raises BenchmarkDataError."""
    if not path.is_file():
        raise BenchmarkDataError(
            f"benchmark {name!r} needs {path}, which does not exist; point --data-dir at the shared data "
            f"folder (the one with README.md, prm800k/, gsm8k/, competition/), or leave {name} out of --benchmarks"
        )
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BenchmarkDataError(
                        f"{path}:{lineno} is not valid JSON ({e.msg} at column {e.colno}); the file is damaged: "
                        "restore it from the source named in the data README"
                    ) from None
                if not isinstance(row, dict):
                    raise BenchmarkDataError(
                        f"{path}:{lineno} is a JSON {type(row).__name__}, not an object; is this the {name} file?"
                    )
                rows.append((lineno, row))
    except UnicodeDecodeError as e:
        raise BenchmarkDataError(
            f"{path} is not UTF-8 text ({e.reason}); restore it from its source"
        ) from None
    if not rows:
        raise BenchmarkDataError(
            f"{path} holds no problems; restore it from the source named in the data README"
        )
    return rows


def _field(row: dict[str, Any], key: str, where: str, name: str) -> Any:
    if key not in row or row[key] is None:
        raise BenchmarkDataError(
            f"{where} lacks the field {key!r} (it has {sorted(row)}); is this the {name} file? "
            "restore it from the source named in the data README"
        )
    return row[key]


def _text(row: dict[str, Any], key: str, where: str, name: str) -> str:
    value = _field(row, key, where, name)
    if not isinstance(value, str) or not value.strip():
        raise BenchmarkDataError(f"{where}: field {key!r} must be non-empty text; got {value!r:.80}")
    return value


def _load_rows(
    name: BenchmarkName, data_dir: Path, build: Callable[[dict[str, Any], int, str], BenchmarkItem]
) -> list[BenchmarkItem]:
    path = benchmark_path(name, data_dir)
    items = []
    for index, (lineno, row) in enumerate(_read_jsonl(path, name)):
        where = f"{path}:{lineno}"
        try:
            item = build(row, index, where)
        except BenchmarkDataError:
            raise
        except (ValueError, TypeError) as e:
            raise BenchmarkDataError(
                f"{where}: {e}; restore the file from the source named in the data README"
            ) from None
        if not item.answer.strip():
            raise BenchmarkDataError(f"{where}: the gold answer is empty; restore the file from its source")
        items.append(item)
    return items


# ---------------------------------------------------------------- one loader per benchmark


def load_math500(data_dir: Path) -> list[BenchmarkItem]:
    def build(row: dict[str, Any], i: int, where: str) -> BenchmarkItem:
        return BenchmarkItem(
            id=str(row.get("unique_id") or f"math500/{i}"),
            problem=_text(row, "problem", where, "MATH-500"),
            answer=str(_field(row, "answer", where, "MATH-500")).strip(),
            level=str(row.get("level", "")),
            subject=str(row.get("subject", "")),
            solution=str(row.get("solution", "")),
        )

    return _load_rows("math500", data_dir, build)


def load_gsm8k(data_dir: Path) -> list[BenchmarkItem]:
    def build(row: dict[str, Any], i: int, where: str) -> BenchmarkItem:
        solution = _text(row, "answer", where, "GSM8K test")
        return BenchmarkItem(
            id=f"gsm8k/test/{i}",
            problem=_text(row, "question", where, "GSM8K test"),
            answer=gsm8k_answer(solution),
            solution=solution,
        )

    return _load_rows("gsm8k", data_dir, build)


def _load_aime(name: Literal["aime24", "aime25"], data_dir: Path) -> list[BenchmarkItem]:
    label = name.upper()

    def build(row: dict[str, Any], i: int, where: str) -> BenchmarkItem:
        return BenchmarkItem(
            id=f"{name}/{row.get('id', i)}",
            problem=_text(row, "problem", where, label),
            answer=integer_answer(str(_field(row, "answer", where, label))),
            solution=str(row.get("solution") or ""),
        )

    return _load_rows(name, data_dir, build)


def load_aime24(data_dir: Path) -> list[BenchmarkItem]:
    return _load_aime("aime24", data_dir)


def load_aime25(data_dir: Path) -> list[BenchmarkItem]:
    return _load_aime("aime25", data_dir)


def load_amc23(data_dir: Path) -> list[BenchmarkItem]:
    def build(row: dict[str, Any], i: int, where: str) -> BenchmarkItem:
        return BenchmarkItem(
            id=f"amc23/{row.get('id', i)}",
            problem=_text(row, "problem", where, "AMC23"),
            answer=number_answer(_field(row, "answer", where, "AMC23")),
        )

    return _load_rows("amc23", data_dir, build)


def load_minerva(data_dir: Path) -> list[BenchmarkItem]:
    from sgpo.verifier.extract import last_boxed

    def build(row: dict[str, Any], i: int, where: str) -> BenchmarkItem:
        solution = _text(row, "solution", where, "Minerva math")
        boxed = last_boxed(solution)
        if boxed is None:
            raise ValueError("the solution has no \\boxed{} answer")
        return BenchmarkItem(
            id=f"minerva/{row.get('idx', i)}",
            problem=_text(row, "problem", where, "Minerva math"),
            answer=strip_dollars(boxed),
            subject=str(row.get("type", "")),
            solution=solution,
        )

    return _load_rows("minerva", data_dir, build)


def load_olympiadbench(data_dir: Path) -> list[BenchmarkItem]:
    def build(row: dict[str, Any], i: int, where: str) -> BenchmarkItem:
        question = _text(row, "question", where, "OlympiadBench")
        context = row.get("context")
        solution = row.get("solution") or ""
        return BenchmarkItem(
            id=f"olympiadbench/{row.get('id', i)}",
            problem=f"{context}\n\n{question}" if context else question,
            answer=olympiad_answer(_field(row, "final_answer", where, "OlympiadBench")),
            subject=str(row.get("subfield") or ""),
            solution="\n\n".join(solution) if isinstance(solution, list) else str(solution),
            tolerance=olympiad_tolerance(row.get("error")),
            unit=strip_dollars(str(row.get("unit") or "")),
        )

    return _load_rows("olympiadbench", data_dir, build)


def load_arith(
    steps: Sequence[int] | None = None,
    per_level: int | None = None,
    seed: int | None = None,
    spec: Any = None,
) -> list[BenchmarkItem]:
    """The synthetic task's test split (the tiny preset's eval levels, spec and seed unless given)."""
    from sgpo.tasks.arith import generate_split
    from sgpo.tasks.tiny import TINY_PRESET

    problems = generate_split(
        "test",
        TINY_PRESET.eval_steps if steps is None else steps,
        TINY_PRESET.eval_per_level if per_level is None else per_level,
        TINY_PRESET.seed if seed is None else seed,
        TINY_PRESET.task if spec is None else spec,
    )
    return [
        BenchmarkItem(
            id=p.unique_id, problem=p.problem, answer=p.answer, level=str(p.steps), solution=p.solution
        )
        for p in problems
    ]


_FILE_LOADERS: dict[BenchmarkName, Callable[[Path], list[BenchmarkItem]]] = {
    "math500": load_math500,
    "gsm8k": load_gsm8k,
    "aime24": load_aime24,
    "aime25": load_aime25,
    "amc23": load_amc23,
    "minerva": load_minerva,
    "olympiadbench": load_olympiadbench,
}


def parse_benchmarks(spec: str) -> list[BenchmarkName]:
    """`"math500,gsm8k"` or `"all"` -> names in order, duplicates dropped; an unknown name lists the valid ones."""
    names = [s.strip().lower() for s in spec.split(",") if s.strip()]
    if not names:
        raise ValueError(
            f"no benchmark named; give a comma-separated list of {', '.join(BENCHMARKS)} or 'all'"
        )
    if "all" in names:
        return list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise ValueError(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)} or 'all'"
        )
    return list(dict.fromkeys(names))  # type: ignore[arg-type]


def load_benchmark(
    name: BenchmarkName, data_dir: Path | None = None, limit: int | None = None
) -> list[BenchmarkItem]:
    """The items of `name` (the first `limit` of them; for arith, the first `limit` of every level)."""
    if name == "arith":
        items = load_arith()
        if limit is None:
            return items
        seen: dict[str, int] = {}
        out = []
        for it in items:
            seen[it.level] = seen.get(it.level, 0) + 1
            if seen[it.level] <= limit:
                out.append(it)
        return out
    items = _FILE_LOADERS[name](Path(data_dir) if data_dir is not None else default_data_dir())
    return items if limit is None else items[:limit]
