"""Training data for RL: `sgpo data --input` converts a dataset into the orchestrator's rows.

The orchestrator reads JSONL rows `{problem, answer, solution}` plus `id` and `level` where the source has them
(`sgpo.orchestrator.dataset.load_prompts`). Sources:

- `math`: MATH-format rows `{problem, solution, level, unique_id}`, with or without `answer`. Without one (the
  original MATH release) the answer is the content of the solution's last `\\boxed{}` (`last_box`, found by the
  verifier's brace matcher); a row whose solution has no box is dropped and counted, never guessed.
- `gsm8k`: `{question, answer}` where `answer` is the worked solution ending in `#### N`; the answer is N
  (thousands commas dropped, as `sgpo eval` reads GSM8K), the solution the text before it without the
  `<<48/2=24>>` calculator notes.
- `columns`: any table, with the column names given (`ColumnMap`); the answer is the answer column, or, when
  that is empty or not mapped, the last `\\boxed{}` of the solution column.
- `auto` (the default) picks `gsm8k` for rows with `question` and a `#### ` answer, `math` for rows with
  `problem` and `solution`, and asks for a format or column names otherwise.

Files: JSONL (`.jsonl`), a JSON array (`.json`), Parquet (`.parquet`) and a folder written by `datasets`'
`save_to_disk` (read with `datasets.load_from_disk`; a `DatasetDict` needs `split`). Parquet and `datasets`
folders need the `data` extra (`pip install 'sgpo[data]'`).

Rows that cannot train are dropped and counted by reason (`ConvertReport.dropped`): no problem text, no answer,
a duplicate problem, a problem of an `exclude` file (e.g. the evaluation set). A file that is not what it claims
(broken JSON, a row that is not an object, a mapped column missing from a row) raises `DataError` naming the
file and row.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

DataFormat = Literal["auto", "math", "gsm8k", "columns"]
DATA_FORMATS: tuple[str, ...] = ("auto", "math", "gsm8k", "columns")

_CALCULATOR_NOTE = re.compile(r"<<[^<>]*>>")
_LEVEL = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


class DataError(ValueError):
    """A dataset file that cannot be read as the format it was given as; the message names the file and row."""


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds what. `answer` None (or an empty cell): the last `\\boxed{}` of `solution`."""

    problem: str = "problem"
    answer: str | None = "answer"
    solution: str | None = "solution"
    id: str | None = None
    level: str | None = None


# The columns of each named format (`columns` takes the caller's ColumnMap).
FORMAT_COLUMNS: dict[str, ColumnMap] = {
    "math": ColumnMap("problem", "answer", "solution", "unique_id", "level"),
    "gsm8k": ColumnMap("question", None, "answer", None, None),
}


@dataclass
class ConvertReport:
    """What a conversion read, wrote and dropped (and why)."""

    source: str
    format: str
    read: int = 0
    written: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Reason -> rows dropped for it."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """Reason -> the first few rows dropped for it (`file:row`)."""
    answers: Counter[str] = field(default_factory=Counter)
    """Where the written rows' answers came from: `answer column`, `last \\boxed{}`, `#### line`."""

    def drop(self, reason: str, where: str) -> None:
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 5:
            shown.append(where)

    def summary(self) -> str:
        lines = [
            f"{self.source} ({self.format}): read {self.read} rows, wrote {self.written}, "
            f"dropped {sum(self.dropped.values())}"
        ]
        lines += [f"  answers from {src}: {n}" for src, n in sorted(self.answers.items())]
        for reason, n in self.dropped.most_common():
            lines.append(f"  dropped {n}: {reason} (e.g. {', '.join(self.examples[reason])})")
        return "\n".join(lines)


# ---------------------------------------------------------------- reading


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{where} is not JSON ({e}); every line of a .jsonl file must be one object"
                ) from None
            yield where, row


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not JSON ({e}); a .json file must hold an array of row objects") from None
    if not isinstance(data, list):
        raise DataError(
            f"{path} holds a JSON {type(data).__name__}, not an array of rows; use .jsonl for lines"
        )
    for i, row in enumerate(data):
        yield f"{path}[{i}]", row


def _needs_data_extra(what: str) -> DataError:
    return DataError(f"reading {what} needs pyarrow and datasets: pip install 'sgpo[data]'")


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise _needs_data_extra(f"Parquet ({path})") from None
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a damaged file
        raise DataError(f"{path} is not a readable Parquet file ({e})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}[{i}]", row


def _saved_dataset_rows(path: Path, split: str | None) -> Iterator[tuple[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise _needs_data_extra(f"a datasets folder ({path})") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise DataError(
            f"{path} is not a folder written by datasets' save_to_disk ({e}); give a .jsonl, .json or "
            ".parquet file, or such a folder"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None or split not in ds:
            raise DataError(f"{path} holds the splits {sorted(ds)}; choose one with --split (got {split!r})")
        ds, where = ds[split], f"{path}[{split}]"
    elif split is not None:
        raise DataError(f"{path} is one dataset without splits; leave out --split (got {split!r})")
    else:
        where = str(path)
    for i, row in enumerate(ds):
        yield f"{where}[{i}]", row


def read_rows(path: Path, split: str | None = None) -> Iterator[tuple[str, Any]]:
    """(`file:row`, row) for every row of a .jsonl / .json / .parquet file or a `save_to_disk` folder."""
    path = Path(path)
    if path.is_dir():
        return _saved_dataset_rows(path, split)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix!r}; give a .jsonl, .json or .parquet file, or a folder "
            "written by datasets' save_to_disk"
        )
    if split is not None:
        raise DataError(f"--split applies to a datasets folder only; {path} is a file")
    return reader(path)


# ---------------------------------------------------------------- converting


def detect_format(row: Any, where: str) -> DataFormat:
    """`gsm8k` or `math` from one row's columns; a DataError saying what to pass otherwise."""
    if isinstance(row, dict):
        if "question" in row and "####" in str(row.get("answer", "")):
            return "gsm8k"
        if "problem" in row and "solution" in row:
            return "math"
    cols = sorted(row) if isinstance(row, dict) else type(row).__name__
    raise DataError(
        f"{where}: cannot tell the format from the columns {cols}; pass --format math|gsm8k, or --format "
        "columns with --problem-col and --answer-col (or --solution-col for boxed answers)"
    )


def _cell(row: dict[str, Any], column: str | None, where: str, required: bool = True) -> str:
    """The column's value as text ("" for None or, unless `required`, a missing column); a DataError when the
    row lacks a required column."""
    if column is None or (column not in row and not required):
        return ""
    if column not in row:
        raise DataError(
            f"{where} has no column {column!r} (it has {sorted(row)}); map the columns with --problem-col, "
            "--answer-col, --solution-col"
        )
    value = row[column]
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def last_box(solution: str) -> str | None:
    """The content of the solution's last `\\boxed{}` (or `\\fbox{}`): the one that ends last, the outermost of
    nested ones. Unlike the verifier's `last_boxed`, boxes just before it are not joined: in MATH solutions those
    are intermediate results ("x = \\boxed{5}, so y = \\boxed{-3}"), checked on PRM800K's answers."""
    from sgpo.verifier.extract import find_boxes

    boxes = find_boxes(solution)
    if not boxes:
        return None
    return max(boxes, key=lambda b: (b[1], -b[0]))[2].strip()


def level_label(raw: str) -> str:
    """MATH's "Level 3" -> "3"; a bare number as is; anything else ("Level ?") -> ""."""
    m = _LEVEL.match(raw)
    return m.group(1) if m else ""


def convert_row(
    row: Any, where: str, fmt: DataFormat, columns: ColumnMap
) -> tuple[dict[str, str] | None, str]:
    """One source row as an orchestrator row, and where its answer came from; (None, reason) when it is dropped."""
    from sgpo.tasks.benchmarks import gsm8k_answer, strip_dollars

    if not isinstance(row, dict):
        raise DataError(f"{where} is a {type(row).__name__}, not an object with columns")
    problem = _cell(row, columns.problem, where)
    if not problem:
        return None, "empty problem"
    solution = _cell(row, columns.solution, where)
    if fmt == "gsm8k":
        try:
            answer = gsm8k_answer(solution)
        except ValueError:
            return None, "no '#### N' answer line"
        solution = _CALCULATOR_NOTE.sub("", solution[: solution.rfind("####")]).strip()
        source = "#### line"
    else:
        # MATH's own release has no answer field; PRM800K's copy and MATH-500 have one
        answer = strip_dollars(_cell(row, columns.answer, where, required=fmt == "columns"))
        source = "answer column"
        if not answer:
            boxed = last_box(solution)
            if boxed is None or not boxed.strip():
                return None, "no answer (no answer column value and no \\boxed{} in the solution)"
            answer, source = boxed.strip(), "last \\boxed{}"
    out = {"problem": problem, "answer": answer, "solution": solution}
    if columns.id is not None and row.get(columns.id) not in (None, ""):
        out["id"] = str(row[columns.id])
    if columns.level is not None and row.get(columns.level) not in (None, ""):
        level = level_label(str(row[columns.level]))
        if level:
            out["level"] = level
    return out, source


def exclusion_set(paths: Sequence[Path]) -> set[str]:
    """The problem texts of the given files (any readable format, `problem` or `question` column)."""
    banned: set[str] = set()
    for p in paths:
        for _where, row in read_rows(p):
            if isinstance(row, dict):
                text = row.get("problem", row.get("question"))
                if isinstance(text, str) and text.strip():
                    banned.add(text.strip())
    return banned


def convert_rows(
    rows: Iterable[tuple[str, Any]],
    report: ConvertReport,
    fmt: DataFormat = "auto",
    columns: ColumnMap | None = None,
    exclude: set[str] | frozenset[str] = frozenset(),
    limit: int | None = None,
) -> Iterator[dict[str, str]]:
    """Converted rows (see the module docstring); counts go to `report`."""
    seen: set[str] = set()
    for where, row in rows:
        if limit is not None and report.written >= limit:
            return
        report.read += 1
        if fmt == "auto":
            fmt = detect_format(row, where)
            report.format = fmt
        cols = columns if fmt == "columns" and columns is not None else FORMAT_COLUMNS.get(fmt, columns)
        assert cols is not None, "the columns format needs a ColumnMap"
        out, source = convert_row(row, where, fmt, cols)
        if out is None:
            report.drop(source, where)
            continue
        if out["problem"] in exclude:
            report.drop("problem in an --exclude file", where)
            continue
        if out["problem"] in seen:
            report.drop("duplicate problem", where)
            continue
        seen.add(out["problem"])
        report.written += 1
        report.answers[source] += 1
        yield out


def convert_dataset(
    source: Path,
    out: Path,
    fmt: DataFormat = "auto",
    columns: ColumnMap | None = None,
    split: str | None = None,
    exclude: Sequence[Path] = (),
    limit: int | None = None,
) -> ConvertReport:
    """Convert `source` into the orchestrator's JSONL at `out` (written through a temp file, then renamed).

    Raises DataError for a bad file or when no row survives."""
    if fmt == "columns" and columns is None:
        raise DataError(
            "--format columns needs the column names: --problem-col and --answer-col or --solution-col"
        )
    report = ConvertReport(str(source), fmt)
    banned = exclusion_set(exclude)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in convert_rows(read_rows(source, split), report, fmt, columns, banned, limit):
                f.write(json.dumps(row) + "\n")  # ASCII: no U+2028 that splitlines() would cut at
        if report.written == 0:
            raise DataError(f"no row of {source} could be converted:\n{report.summary()}")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return report
