"""Step-count distributions of real long solutions, split as the judge splits them, before and after
`sgpo.core.segment_steps`'s merging (docs/judge.md shows the figures).

    python bench/step_counts.py [--data ../shared/data] [--min-chars 200] [--cap 16]

Sets: MATH-500 reference solutions (prm800k/math500_test.jsonl), OlympiadBench reference solutions
(competition/olympiadbench_test.jsonl, the `solution` list joined by blank lines), ProcessBench responses
(processbench/{gsm8k,math}.json, each response's `steps` joined by blank lines, as a policy would write them).
"before": `split_steps(text, "auto")`; "math": display math kept with its sentence; "after": that plus
`min_chars` merging and the `cap`.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sgpo.core import segment_steps, split_steps


def texts(data: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    rows = [json.loads(line) for line in (data / "prm800k" / "math500_test.jsonl").read_text().splitlines()]
    out["MATH-500 solutions"] = [r["solution"] for r in rows]
    rows = [
        json.loads(line)
        for line in (data / "competition" / "olympiadbench_test.jsonl").read_text().splitlines()
    ]
    out["OlympiadBench solutions"] = ["\n\n".join(r["solution"]) for r in rows if r.get("solution")]
    for split in ("gsm8k", "math"):
        items = json.loads((data / "processbench" / f"{split}.json").read_text())
        out[f"ProcessBench {split} responses"] = ["\n\n".join(x["steps"]) for x in items]
    return out


def describe(counts: list[int]) -> str:
    q = statistics.quantiles(counts, n=10)
    return (
        f"mean {statistics.mean(counts):5.1f}  median {statistics.median(counts):4.0f}  "
        f"p90 {q[-1]:5.1f}  max {max(counts):4d}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--min-chars", type=int, default=200)
    p.add_argument("--cap", type=int, default=16)
    args = p.parse_args()
    print(
        f"| set | n | before: split_steps auto | display math kept | after: min_chars {args.min_chars}, cap {args.cap} |"
    )
    print("|---|---|---|---|---|")
    for name, docs in texts(args.data).items():
        docs = [d for d in docs if d.strip()]
        before = [len(split_steps(d)) for d in docs]
        math = [len(segment_steps(d)) for d in docs]
        after = [len(segment_steps(d, min_chars=args.min_chars, max_steps=args.cap)) for d in docs]
        print(f"| {name} | {len(docs)} | {describe(before)} | {describe(math)} | {describe(after)} |")


if __name__ == "__main__":
    main()
