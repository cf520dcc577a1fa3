"""Load on the served APIs, side by side in one run: the judge over HTTP and gRPC and the generator over HTTP at
32 concurrent clients, then health latency while 60 clients load each service.

    python bench/load.py                        # about two minutes on 2 shared cores
    python bench/load.py --requests 500 --generator-requests 200

1. `sgpo serve judge` (symbolic) and `sgpo serve generator` (the tiny-random policy) start as subprocesses,
   with their default limits (docs/design.md, "5. Limits").
2. Work: the judge gets one 8-response x 6-step group per request (`POST /v1/judge`, then `JudgeService.Judge`),
   the generator one prompt, n = 1, 16 tokens per request (`POST /v1/completions`); C clients each send their
   next request as soon as the last is answered. p50 / p99 / max latency, requests per second, errors (any
   non-200 or transport error).
3. Health: while 60 clients load a service, a separate process probes its health endpoints in a loop
   (HTTP `/healthz` or `/health`, and gRPC health `Check`) and reports their latencies; for the generator
   twice, under 60 HTTP callers and under 60 gRPC `Generate` callers (which hold gRPC server threads).

Machine, load average and date are printed: on a shared machine figures are noisy; compare within a run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from judge import arith_group, machine  # noqa: E402  (bench/judge.py)
from judge import grpc_load as judge_grpc_load  # noqa: E402
from judge import http_load as judge_http_load  # noqa: E402

KEY = "bench-key"


class Result:
    def __init__(self, name: str, latencies: list[float], wall: float, errors: int) -> None:
        self.name, self.latencies, self.wall, self.errors = name, sorted(latencies), wall, errors

    def row(self) -> str:
        xs = self.latencies or [float("nan")]
        p50 = statistics.median(xs) * 1000
        p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))] * 1000
        rate = len(self.latencies) / self.wall if self.wall else 0.0
        return (
            f"| {self.name} | {len(self.latencies) + self.errors} | {p50:,.1f} | {p99:,.1f} | "
            f"{xs[-1] * 1000:,.1f} | {rate:,.0f} | {self.errors} |"
        )


def p99(r: Result) -> float:
    return r.latencies[min(len(r.latencies) - 1, int(0.99 * len(r.latencies)))]


HEADER = "| what | requests | p50 ms | p99 ms | max ms | req/s | errors |\n|---|---|---|---|---|---|---|"


async def http_load(
    name: str, url: str, headers: dict[str, str], bodies: list[Any], n: int, c: int
) -> Result:
    """bench/judge.py's closed-loop HTTP load (`c` clients, `n` POSTs), as a named Result."""
    return Result(name, *await judge_http_load(url, headers, bodies, n, c, False))


def grpc_load(name: str, target: str, requests: list[Any], n: int, c: int, method: str = "judge") -> Result:
    """bench/judge.py's gRPC load (`c` threads, `n` calls of Judge or Generate), as a named Result."""
    return Result(name, *judge_grpc_load(target, requests, n, c, method))


def probe_main(http_url: str, grpc_target: str) -> None:
    """The prober process: HTTP health and gRPC health in turn until its stdin closes; prints JSON latencies."""
    import select

    import grpc
    import httpx
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    out: dict[str, list[float]] = {"http": [], "grpc": [], "http_errors": [], "grpc_errors": []}
    with httpx.Client(timeout=30) as client, grpc.insecure_channel(grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not select.select([sys.stdin], [], [], 0)[0]:
            t = time.perf_counter()
            try:
                ok = client.get(http_url).status_code == 200
            except httpx.TransportError:
                ok = False
            out["http" if ok else "http_errors"].append(time.perf_counter() - t)
            t = time.perf_counter()
            try:
                ok = stub.Check(health_pb2.HealthCheckRequest(), timeout=30).status == 1
            except grpc.RpcError:
                ok = False
            out["grpc" if ok else "grpc_errors"].append(time.perf_counter() - t)
            time.sleep(0.02)
    print(json.dumps(out))


def health_under_load(name: str, http_url: str, grpc_target: str, load: Callable[[], Result]) -> list[Result]:
    """Run `load` (60 clients) while a separate process probes health; the probe's latencies as Results."""
    probe = subprocess.Popen(
        [sys.executable, __file__, "--probe", http_url, grpc_target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # the prober's imports
    work = load()
    seconds = work.wall
    out, _ = probe.communicate(timeout=120)  # closes its stdin: it stops and prints
    data = json.loads(out)
    return [
        work,
        Result(f"{name} HTTP health (probe)", data["http"], seconds, len(data["http_errors"])),
        Result(f"{name} gRPC health (probe)", data["grpc"], seconds, len(data["grpc_errors"])),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="judge requests per transport")
    p.add_argument("--generator-requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--health-concurrency", type=int, default=60)
    p.add_argument(
        "--only",
        choices=("judge", "generator"),
        help="only the judge's two work rows, or only the generator's HTTP row (quick A/B runs)",
    )
    p.add_argument("--probe", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe:
        probe_main(args.probe[0], args.probe[1])
        return 0

    from sgpo.v1 import judge_pb2
    from tests.support import free_port, run_service

    rng = random.Random(1)
    groups = [arith_group(rng) for _ in range(64)]
    judge_bodies = [
        {"problem": pr, "reference_solution": r, "items": [{"response": x} for x in xs]}
        for pr, r, xs in groups
    ]
    judge_requests = [
        judge_pb2.JudgeRequest(
            problem=pr, reference_solution=r, items=[judge_pb2.JudgeItem(response=x) for x in xs]
        )
        for pr, r, xs in groups
    ]
    gen_bodies = [
        {"prompt": f"Start with {i}. Add 5.\n", "max_tokens": 16, "n": 1, "temperature": 1.0}
        for i in range(64)
    ]
    c, hc, n, gn = args.concurrency, args.health_concurrency, args.requests, args.generator_requests
    print(f"machine: {machine()}")
    judge_http, gen_http = free_port(), free_port()
    judge_env = {
        "SGPO_JUDGE__HTTP_PORT": str(judge_http),
        "SGPO_JUDGE__API_KEYS": json.dumps([KEY]),
        "SGPO_JUDGE__LOG_LEVEL": "warning",
    }
    gen_env = {
        "SGPO_GENERATOR__MODEL": "tiny-random",
        "SGPO_GENERATOR__HTTP_PORT": str(gen_http),
        "SGPO_GENERATOR__LOG_LEVEL": "warning",
    }
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        judge = stack.enter_context(run_service("judge", Path(tmp), env=judge_env))
        if args.only != "judge":
            gen = stack.enter_context(run_service("generator", Path(tmp), env=gen_env, ready_timeout=300))
        jurl, gurl = f"http://127.0.0.1:{judge_http}", f"http://127.0.0.1:{gen_http}"
        hdr = {"X-API-Key": KEY}
        if args.only == "generator":
            asyncio.run(http_load("warm", f"{gurl}/v1/completions", {}, gen_bodies, 16, 8))
            r = asyncio.run(
                http_load(
                    "generator HTTP POST /v1/completions", f"{gurl}/v1/completions", {}, gen_bodies, gn, c
                )
            )
            print(r.row())
            return 0
        asyncio.run(http_load("warm", f"{jurl}/v1/judge", hdr, judge_bodies, 64, 8))
        grpc_load("warm", judge.target, judge_requests, 64, 8)
        print(f"work at {c} concurrent clients:", flush=True)
        results.append(
            asyncio.run(http_load("judge HTTP POST /v1/judge", f"{jurl}/v1/judge", hdr, judge_bodies, n, c))
        )
        results.append(grpc_load("judge gRPC Judge", judge.target, judge_requests, n, c))
        if args.only == "judge":
            for r in results:
                print(r.row())
            print(f"judge HTTP p99 / gRPC p99 = {p99(results[0]) / p99(results[1]):.2f}")
            return 0
        asyncio.run(http_load("warm", f"{gurl}/v1/completions", {}, gen_bodies, 16, 8))
        results.append(
            asyncio.run(
                http_load(
                    "generator HTTP POST /v1/completions", f"{gurl}/v1/completions", {}, gen_bodies, gn, c
                )
            )
        )
        for r in results:
            print(r.row(), flush=True)
        print(f"health while {hc} clients load the service:", flush=True)
        judge_probe = health_under_load(
            "judge",
            f"{jurl}/healthz",
            judge.target,
            lambda: asyncio.run(
                http_load(f"judge HTTP /v1/judge x{hc}", f"{jurl}/v1/judge", hdr, judge_bodies, n, hc)
            ),
        )
        gen_probe = health_under_load(
            "generator",
            f"{gurl}/health",
            gen.target,
            lambda: asyncio.run(
                http_load(
                    f"generator HTTP /v1/completions x{hc}", f"{gurl}/v1/completions", {}, gen_bodies, gn, hc
                )
            ),
        )
        from sgpo.v1 import common_pb2, generator_pb2

        sampling = common_pb2.SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=16)
        gen_requests = [
            generator_pb2.GenerateRequest(prompts=[b["prompt"]], sampling=sampling) for b in gen_bodies
        ]
        gen_grpc_probe = health_under_load(
            "generator",
            f"{gurl}/health",
            gen.target,
            lambda: grpc_load(f"generator gRPC Generate x{hc}", gen.target, gen_requests, gn, hc, "generate"),
        )
        gen_probe += gen_grpc_probe
        for r in judge_probe + gen_probe:
            print(r.row(), flush=True)
    print(f"machine after: {machine()}")
    print("\nall rows:\n" + HEADER)
    for r in results + judge_probe + gen_probe:
        print(r.row())
    print(f"\njudge HTTP p99 / gRPC p99 = {p99(results[0]) / p99(results[1]):.2f} (target <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
