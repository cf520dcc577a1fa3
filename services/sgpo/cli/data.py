"""`sgpo data`: write the prompts a training run reads.

`sgpo data --preset tiny --out DIR` writes the synthetic task's RL prompts and held-out set, the files `sgpo
train` writes into its run folder (train_problems.jsonl with the RL levels, eval_problems.jsonl with every
level, disjoint from the training prompts). Compose and Helm use it.

`sgpo data --input SOURCE --out FILE.jsonl` converts real data (MATH, GSM8K, or any JSONL / JSON / Parquet file
or `datasets` folder with the columns named) into the orchestrator's rows and says how many rows were dropped
and why (`sgpo.tasks.datasets`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write a run's prompts: the tiny task's (--preset tiny) or real data converted (--input FILE|FOLDER)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset", choices=["tiny"], help="write the synthetic task's prompts (the default without --input)"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="--preset: the folder to write the two files into; --input: the JSONL file to write (a folder: "
        "FOLDER/train_problems.jsonl)",
    )
    p.add_argument("--seed", type=int, default=0, help="--preset: seed of the problem generator")
    p.add_argument(
        "--input", type=Path, help="a .jsonl, .json or .parquet file, or a folder from datasets' save_to_disk"
    )
    p.add_argument(
        "--format",
        choices=["auto", "math", "gsm8k", "columns"],
        default="auto",
        help="how to read --input: MATH rows (answer from the solution's last \\boxed{} where no answer field), "
        "GSM8K rows (#### N), named columns, or auto (by the columns; default)",
    )
    p.add_argument("--problem-col", help="column holding the problem text (implies --format columns)")
    p.add_argument("--answer-col", help="column holding the final answer (implies --format columns)")
    p.add_argument(
        "--solution-col",
        help="column holding a worked solution: the judge's reference, and the answer's "
        "source (its last \\boxed{}) where the answer column is empty or not given",
    )
    p.add_argument("--id-col", help="column holding a row id")
    p.add_argument("--level-col", help="column holding a difficulty level ('Level 3' or 3)")
    p.add_argument("--split", help="which split of a datasets folder holding several (train, test, ...)")
    p.add_argument(
        "--exclude",
        type=Path,
        action="append",
        default=[],
        help="drop problems that appear in this file (e.g. the evaluation set); repeatable",
    )
    p.add_argument("--limit", type=int, help="write at most this many rows")


def _convert(args: argparse.Namespace) -> int:
    from sgpo.tasks.datasets import ColumnMap, DataError, convert_dataset

    mapped = [args.problem_col, args.answer_col, args.solution_col]
    fmt = args.format
    columns = None
    if any(mapped):
        if fmt not in ("auto", "columns"):
            print(
                f"error: --format {fmt} has fixed columns; use --format columns with --problem-col etc.",
                file=sys.stderr,
            )
            return 2
        if not args.answer_col and not args.solution_col:
            print(
                "error: name the answer: --answer-col, or --solution-col to take its last \\boxed{}",
                file=sys.stderr,
            )
            return 2
        fmt = "columns"
        columns = ColumnMap(
            problem=args.problem_col or "problem",
            answer=args.answer_col,
            solution=args.solution_col,
            id=args.id_col,
            level=args.level_col,
        )
    elif fmt == "columns":
        print(
            "error: --format columns needs --problem-col and --answer-col or --solution-col", file=sys.stderr
        )
        return 2
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be >= 1; got {args.limit}", file=sys.stderr)
        return 2
    out = args.out / "train_problems.jsonl" if args.out.is_dir() else args.out
    try:
        report = convert_dataset(
            args.input, out, fmt, columns, split=args.split, exclude=args.exclude, limit=args.limit
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {out} ({report.written} problems)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.input is not None:
        if args.preset is not None:
            print("error: give --preset or --input, not both", file=sys.stderr)
            return 2
        return _convert(args)
    from sgpo.launch.presets import TRAIN_PRESETS
    from sgpo.launch.train import write_datasets

    args.out.mkdir(parents=True, exist_ok=True)
    for path in write_datasets(args.out, args.seed, TRAIN_PRESETS[args.preset or "tiny"]):
        print(f"wrote {path} ({sum(1 for _ in path.open())} problems)")
    return 0
