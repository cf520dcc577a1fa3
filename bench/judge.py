"""Judge benchmark: symbolic responses/s, and HTTP / gRPC latency at 32 concurrent clients against a local server.

    python bench/judge.py                  # everything (about a minute)
    python bench/judge.py --only symbolic  # or: --only serve

1. Symbolic throughput on two workloads: groups of 8 synthetic-task responses (what training sends) and
   ProcessBench MATH solutions (long LaTeX steps). Baseline, same process and data: the same claims checked
   with sympy (parse both sides, compare with `sympy.simplify(l - r) == 0`), the obvious alternative.
2. `sgpo serve judge` started as a subprocess; N requests of one 8-response group each from C concurrent
   clients, over HTTP (POST /v1/judge) and over gRPC (JudgeService.Judge); p50 / p99 / requests per second.
   HTTP GET /healthz under the same load is the framework's floor.

Machine, load and date are printed: on a shared machine the figures are noisy; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
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


def arith_group(rng: random.Random, steps: int = 6, g: int = 8) -> tuple[str, str, list[str]]:
    """A synthetic-task problem, its reference, and g wrong responses, each with one mistake of the kinds the
    tiny policy makes: an arithmetic slip, a copied wrong operand, or a dropped chain."""
    value = rng.randint(1, 99)
    words, claims = [f"Start with {value}."], []
    for _ in range(steps):
        op, b = rng.choice("+-"), rng.randint(1, 9)
        new = value + b if op == "+" else value - b
        words.append(f"{'Add' if op == '+' else 'Subtract'} {b}.")
        claims.append((value, op, b, new))
        value = new
    ref = [f"Step {k + 1}: {a} {op} {b} = {c}" for k, (a, op, b, c) in enumerate(claims)] + [
        f"Answer: {value}"
    ]
    responses = []
    for _ in range(g):
        lines, cur = [], claims[0][0]
        at, kind = rng.randrange(steps), rng.choice(("slip", "operand", "chain"))
        for k, (_, op, b, _) in enumerate(claims):
            start = claims[0][0] if (k == at and k and kind == "chain") else cur
            b = b + 1 if (k == at and kind == "operand") else b
            new = start + b if op == "+" else start - b
            new += rng.choice((-1, 1)) if (k == at and kind == "slip") else 0
            lines.append(f"Step {k + 1}: {start} {op} {b} = {new}")
            cur = new
        responses.append("\n".join([*lines, f"Answer: {cur}"]))
    return " ".join(words), "\n".join(ref), responses


def bench_symbolic(seconds: float) -> None:
    import sympy

    from sgpo.core import split_steps
    from sgpo.judge.config import JudgeConfig
    from sgpo.judge.judge import build_judge
    from sgpo.judge.symbolic import find_claims
    from sgpo.judge.types import JudgeItem

    judge = build_judge(JudgeConfig())
    rng = random.Random(0)
    groups = [arith_group(rng) for _ in range(200)]
    pb = json.loads((DATA / "processbench" / "math.json").read_text())
    workloads = {
        "synthetic task (groups of 8, 6 steps)": [
            (p, r, [JudgeItem(response=x) for x in xs]) for p, r, xs in groups
        ],
        "ProcessBench MATH solutions (1 per call)": [
            (x["problem"], "", [JudgeItem(steps=tuple(x["steps"]))]) for x in pb
        ],
    }

    def sympy_check(items: list[JudgeItem]) -> None:
        for it in items:
            steps = it.steps or tuple(s.text for s in split_steps(it.response))
            for step in steps:
                for c in find_claims(step, judge.locator.cfg):  # type: ignore[attr-defined]
                    try:
                        lhs = sympy.sympify(
                            c.lhs.replace("^", "**").replace("%", "/100").replace("√", "sqrt")
                        )
                        rhs = sympy.sympify(
                            c.rhs.replace("^", "**").replace("%", "/100").replace("√", "sqrt")
                        )
                        sympy.simplify(lhs - rhs) == 0  # noqa: B015
                    except (sympy.SympifyError, TypeError, SyntaxError):
                        pass

    for name, work in workloads.items():
        rates = {}
        for label, fn in (
            ("symbolic judge", lambda w: judge.judge(w[0], w[1], w[2])),
            ("sympy baseline", lambda w: sympy_check(w[2])),
        ):
            n, start, i = 0, time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                w = work[i % len(work)]
                fn(w)
                n += len(w[2])
                i += 1
            rates[label] = n / (time.perf_counter() - start)
        ratio = rates["symbolic judge"] / rates["sympy baseline"]
        print(
            f"  {name}: symbolic judge {rates['symbolic judge']:,.0f} responses/s | "
            f"sympy on the same claims {rates['sympy baseline']:,.0f} responses/s | ratio {ratio:.1f}x"
        )


def percentiles(xs: list[float]) -> str:
    xs = sorted(xs)
    p50 = statistics.median(xs) * 1000
    p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000
    return f"p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"


async def http_load(
    url: str,
    headers: dict[str, str],
    bodies: list[dict],
    n: int,
    c: int,
    get: bool,  # type: ignore[type-arg]
) -> tuple[list[float], float, int]:
    """Latencies of the successful requests, wall time, and how many failed (non-200 or a transport error)."""
    import httpx

    latencies: list[float] = []
    failed = 0
    queue = list(range(n))
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=c)) as client:

        async def worker() -> None:
            nonlocal failed
            while queue:
                i = queue.pop()
                t = time.perf_counter()
                try:
                    if get:
                        r = await client.get(url)
                    else:
                        r = await client.post(url, json=bodies[i % len(bodies)], headers=headers)
                except httpx.TransportError as e:
                    failed += 1
                    print(f"    request failed: {type(e).__name__} {e}", file=sys.stderr)
                    continue
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                else:
                    failed += 1
                    print(f"    request failed: HTTP {r.status_code} {r.text[:200]}", file=sys.stderr)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(c)))
        return latencies, time.perf_counter() - start, failed


def grpc_load(
    target: str,
    requests: list,  # type: ignore[type-arg]
    n: int,
    c: int,
    method: str = "judge",
) -> tuple[list[float], float, int]:
    """`n` calls of the judge's Judge (or, method "generate", a generator's Generate) from `c` threads:
    latencies of the successful calls, wall time, and how many failed."""
    import grpc

    from sgpo.common import auth
    from sgpo.v1 import generator_pb2_grpc, judge_pb2_grpc

    latencies: list[float] = []
    lock, counter = threading.Lock(), iter(range(n))
    channel = auth.channel(target)  # sends SGPO_SERVICE_TOKEN(_FILE) when the server checks one
    call = (
        judge_pb2_grpc.JudgeServiceStub(channel).Judge
        if method == "judge"
        else generator_pb2_grpc.GeneratorServiceStub(channel).Generate
    )

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                call(requests[i % len(requests)], timeout=120)
            except grpc.RpcError as e:
                print(f"    request failed: {e.code()} {e.details()}", file=sys.stderr)
                continue
            with lock:
                latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(c)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    return latencies, time.perf_counter() - start, n - len(latencies)


def bench_serve(n: int, c: int) -> None:
    from sgpo.v1 import judge_pb2
    from tests.support import free_port, run_service

    key = "bench-key"
    rng = random.Random(1)
    groups = [arith_group(rng) for _ in range(64)]
    bodies = [
        {"problem": p, "reference_solution": r, "items": [{"response": x} for x in xs]} for p, r, xs in groups
    ]
    requests = [
        judge_pb2.JudgeRequest(
            problem=p, reference_solution=r, items=[judge_pb2.JudgeItem(response=x) for x in xs]
        )
        for p, r, xs in groups
    ]
    http_port = free_port()
    env = {
        "SGPO_JUDGE__HTTP_PORT": str(http_port),
        "SGPO_JUDGE__API_KEYS": json.dumps([key]),
        "SGPO_JUDGE__LOG_LEVEL": "warning",
    }
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, run_service("judge", Path(tmp), env=env) as service:
        base = f"http://127.0.0.1:{http_port}"
        asyncio.run(http_load(f"{base}/v1/judge", {"X-API-Key": key}, bodies, 64, 8, False))  # warm up
        for name, run in (
            (
                "HTTP POST /v1/judge",
                lambda: asyncio.run(http_load(f"{base}/v1/judge", {"X-API-Key": key}, bodies, n, c, False)),
            ),
            ("gRPC Judge         ", lambda: grpc_load(service.target, requests, n, c)),
            (
                "HTTP GET /healthz  ",
                lambda: asyncio.run(http_load(f"{base}/healthz", {}, bodies, n, c, True)),
            ),
        ):
            lat, wall, failed = run()
            print(
                f"  {name}: {percentiles(lat)}  {len(lat) / wall:6.0f} req/s  ({len(lat)} requests, {c} clients"
                + (f", {failed} FAILED" if failed else "")
                + ")"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=("symbolic", "serve"))
    p.add_argument("--seconds", type=float, default=5.0, help="time per symbolic measurement")
    p.add_argument("--requests", type=int, default=1000, help="requests per serving measurement")
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args()
    print(f"machine: {machine()}")
    print("note: this machine's 2 cores are shared with other engineers' jobs; absolute figures are noisy")
    if args.only in (None, "symbolic"):
        print("symbolic judge throughput (one thread):")
        bench_symbolic(args.seconds)
    if args.only in (None, "serve"):
        print(
            f"sgpo serve judge (symbolic backend), one 8-response group per request, {args.concurrency} clients:"
        )
        bench_serve(args.requests, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
