"""Verifier benchmark and real-data agreement figures.

    python bench/verifier.py                     # throughput: sgpo verifier vs serial math-verify (a few minutes)
    python bench/verifier.py throughput --limit 200
    python bench/verifier.py agreement           # every real-data agreement figure, full runs, with disagreements

Throughput workload: all of MATH-500, each gold `solution` checked against its `answer` (should be correct)
plus a perturbed copy whose last box holds a wrong answer of the same shape (should be wrong): 1000 items.
- baseline, same process and items: math-verify called the usual way, `verify(parse("$" + answer + "$"),
  parse(solution))`, serially, with its own signal-based timeouts (main thread);
- sgpo: `MathVerifier(workers=2)`; 4 client threads each send one item per `verify_batch` call.
Both sides warm latex2sympy's parser with the same corpus first (`sgpo.verifier._warm`), then run two
interleaved rounds: round 1 is cold for both (latex2sympy's ANTLR parser is much slower on shapes it has not
seen), round 2 warm for both. Throughput ratio and p50 / p99 per-item latency are printed per round, for all
items and for the items that reach sympy in sgpo (the fast path decides the rest), with hangs (timeouts).

Machine, load and date are printed: the machine is shared, so the figures are noisy; compare the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} | {platform.node()} | {cpu} | {os.cpu_count()} cores | "
        f"load avg {load} | Python {platform.python_version()}"
    )


def perturb(answer: str) -> str:
    """A wrong answer of the same shape: the first number in it plus one ("(6,31,-1)" -> "(7,31,-1)",
    "\\frac{\\sqrt{3}}{2}" -> "\\frac{\\sqrt{4}}{2}"); `answer + 1` when it has no digit."""
    if re.search(r"\d", answer):
        return re.sub(r"\d+", lambda m: str(int(m.group()) + 1), answer, count=1)
    return f"{answer}+1"


def replace_last_box(solution: str, new: str) -> str:
    from sgpo.verifier.extract import find_boxes

    boxes = find_boxes(solution)
    if not boxes:
        return solution + f" \\boxed{{{new}}}"
    start, end, _ = max(boxes, key=lambda b: (b[1], -b[0]))
    return solution[:start] + f"\\boxed{{{new}}}" + solution[end:]


def workload(limit: int | None) -> list[tuple[str, str, bool]]:
    rows = [json.loads(line) for line in (DATA / "prm800k" / "math500_test.jsonl").open()][:limit]
    items = []
    for r in rows:
        items.append((r["answer"], r["solution"], True))
        items.append((r["answer"], replace_last_box(r["solution"], perturb(r["answer"])), False))
    return items


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_baseline(items: list[tuple[str, str, bool]]) -> tuple[float, list[float], list[bool]]:
    from math_verify import parse, verify

    latencies, correct = [], []
    start = time.perf_counter()
    for gold, pred, _ in items:
        t = time.perf_counter()
        ok = verify(parse(f"${gold}$"), parse(pred))
        latencies.append(time.perf_counter() - t)
        correct.append(bool(ok))
    return time.perf_counter() - start, latencies, correct


def run_sgpo(v: object, items: list[tuple[str, str, bool]], threads: int) -> tuple[float, list[float], list]:
    lock = threading.Lock()
    latencies: list[float] = [0.0] * len(items)
    verdicts: list = [None] * len(items)

    def one(i: int) -> None:
        t = time.perf_counter()
        verdict = v.verify_batch([(items[i][0], items[i][1])])[0]  # type: ignore[attr-defined]
        with lock:
            latencies[i] = time.perf_counter() - t
            verdicts[i] = verdict

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(items))))
    return time.perf_counter() - start, latencies, verdicts


def report(name: str, wall: float, lat: list[float], n: int) -> float:
    rate = n / wall
    print(
        f"  {name:<28} {rate:8.1f} items/s   p50 {1000 * pct(lat, 0.5):8.2f} ms   p99 {1000 * pct(lat, 0.99):8.1f} ms"
    )
    return rate


def throughput(args: argparse.Namespace) -> None:
    import sgpo.verifier._warm  # noqa: F401 - warms latex2sympy in this process too, like the workers
    from sgpo.verifier import MathVerifier, VerifierConfig
    from sgpo.verifier.verifier import prepare

    print(machine())
    items = workload(args.limit)
    n = len(items)
    print(f"workload: {n} items from MATH-500 ({n // 2} gold solutions + {n // 2} perturbed)")
    symbolic = [
        i for i, (g, p, _) in enumerate(items) if not hasattr(prepare(g, p, VerifierConfig()), "status")
    ]
    print(f"the sgpo fast path decides {n - len(symbolic)} items; {len(symbolic)} go to the workers")
    want = [w for _, _, w in items]
    totals = {"base": 0.0, "sgpo": 0.0}
    with MathVerifier(VerifierConfig(workers=args.workers)) as v:
        v.wait_ready()
        # Two rounds, interleaved, so that load changes on the shared machine hit both sides; round 1 is
        # cold for both (only the shared warm-up corpus), round 2 warm for both.
        for rnd in (1, 2):
            base_wall, base_lat, base_ok = run_baseline(items)
            sgpo_wall, sgpo_lat, verdicts = run_sgpo(v, items, args.threads)
            totals["base"] += base_wall
            totals["sgpo"] += sgpo_wall
            print(f"round {rnd}, all {n} items:")
            b = report("math-verify serial", base_wall, base_lat, n)
            s = report(f"sgpo ({args.workers} workers, {args.threads} clients)", sgpo_wall, sgpo_lat, n)
            print(f"  ratio sgpo / serial math-verify: {s / b:.2f}x")
            if symbolic:
                sym_s = [sgpo_lat[i] for i in symbolic]
                sym_b = [base_lat[i] for i in symbolic]
                print(
                    f"  the {len(symbolic)} symbolic items: sgpo p50 {1000 * pct(sym_s, 0.5):.1f} ms p99 "
                    f"{1000 * pct(sym_s, 0.99):.1f} ms; math-verify p50 {1000 * pct(sym_b, 0.5):.1f} ms p99 "
                    f"{1000 * pct(sym_b, 0.99):.1f} ms (serial total {sum(sym_b):.1f}s)"
                )
            hangs = sum(x.reason.startswith("timed out") for x in verdicts)
            print(
                f"  hangs: sgpo {hangs} timed out (unscorable); math-verify {sum(t > 5.0 for t in base_lat)} calls over 5 s"
            )
            sgpo_acc = sum((x.status == "correct") == w for x, w in zip(verdicts, want, strict=True)) / n
            base_acc = sum(ok == w for ok, w in zip(base_ok, want, strict=True)) / n
            statuses = {
                st: sum(x.status == st for x in verdicts) for st in ("correct", "wrong", "unscorable")
            }
            print(
                f"  labels reproduced: sgpo {100 * sgpo_acc:.1f}% {statuses}; math-verify {100 * base_acc:.1f}%"
            )
            for i, (x, w) in enumerate(zip(verdicts, want, strict=True)):
                if rnd == 1 and (x.status == "correct") != w:
                    print(f"    sgpo item {i} ({'gold' if w else 'perturbed'}): {items[i][0]!r} -> {x}")
    print(f"overall ratio (both rounds): {totals['base'] / totals['sgpo']:.2f}x  (target >= 1.5)")
    print(machine())


def agreement(args: argparse.Namespace) -> None:
    from sgpo.verifier import MathVerifier, VerifierConfig
    from tests.unit.verifier.realdata import (
        MATH_VERIFY_KNOWN_DISAGREEMENTS,
        math_verify_cases,
        score_gsm8k,
        score_math500,
        score_math_verify,
        score_olympiad,
    )

    print(machine())
    print(f"per-item deadline {args.deadline_s}s, {args.workers} workers")
    t = time.perf_counter()
    mv = score_math_verify(math_verify_cases(), workers=args.workers, deadline_s=args.deadline_s)
    print(mv.summary(), f"[{time.perf_counter() - t:.0f}s]")
    for d in mv.disagreements:
        why = MATH_VERIFY_KNOWN_DISAGREEMENTS.get(d["id"], "NEW: not in the documented list")
        print(f"  id {d['id']}: expected {d['expected']}, got {d['status']} ({d['reason']}) -- {why}")
    with MathVerifier(VerifierConfig(workers=args.workers, deadline_s=args.deadline_s)) as v:
        v.wait_ready()
        for score in (score_gsm8k, score_math500, score_olympiad):
            t = time.perf_counter()
            result = score(v)
            print(result.summary(), f"[{time.perf_counter() - t:.0f}s]")
            for d in result.disagreements:
                print("  ", {k: (str(x)[:90]) for k, x in d.items()})
    print(machine())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=["throughput", "agreement"], default="throughput")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4, help="client threads calling the sgpo verifier")
    p.add_argument("--limit", type=int, help="use only the first N MATH-500 problems")
    p.add_argument("--deadline-s", type=float, default=5.0, help="per-item deadline for `agreement`")
    args = p.parse_args()
    throughput(args) if args.what == "throughput" else agreement(args)


if __name__ == "__main__":
    main()
