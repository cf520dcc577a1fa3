"""What `POST /v1/score_groups` costs a trainer per batch: latency of one request against local services.

    python bench/score_groups.py                      # 16 prompts x 8 completions (the tiny preset's step), 10 requests
    python bench/score_groups.py --prompts 4 --group 4

`sgpo serve verifier` and `sgpo serve judge` (symbolic backend, [judge.scoring] verifier set) are started as
subprocesses. The batch: synthetic-task problems of 4 to 6 steps, answered by a sloppy solver (each step slips
with probability --slip), so a share of groups are all-negative and get judged. Printed: the median and p90 of
the whole request, beside the median of one Verify call with the same completions (straight to the verifier over
gRPC): the difference is what judging and scoring add. Machine, load and date are printed; on a shared CPU the
figures are noisy, compare the two in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--slip", type=float, default=0.35, help="per-step slip probability of the sloppy solver")
    p.add_argument("--requests", type=int, default=10)
    args = p.parse_args()

    import grpc
    import httpx

    from sgpo.tasks.arith import ArithSpec, generate_problem, sloppy_solution
    from sgpo.v1 import verifier_pb2, verifier_pb2_grpc
    from tests.support import free_port, run_service

    rng = random.Random(0)
    groups = []
    for _ in range(args.prompts):
        prob = generate_problem(rng, rng.choice((4, 5, 6)), ArithSpec(start_max=9))
        groups.append(
            {
                "problem": prob.problem,
                "answer": prob.answer,
                "completions": [sloppy_solution(prob, rng, args.slip) for _ in range(args.group)],
            }
        )
    key, http_port = "bench-key", free_port()
    with (
        tempfile.TemporaryDirectory() as tmp,
        run_service("verifier", Path(tmp), env={"SGPO_VERIFIER__WORKERS": "1"}) as verifier,
    ):
        env = {
            "SGPO_JUDGE__HTTP_PORT": str(http_port),
            "SGPO_JUDGE__API_KEYS": json.dumps([key]),
            "SGPO_JUDGE__MAX_ITEMS": str(max(256, args.prompts * args.group)),
            "SGPO_JUDGE__SCORING__VERIFIER": verifier.target,
        }
        with run_service("judge", Path(tmp), env=env):
            http = httpx.Client(
                base_url=f"http://127.0.0.1:{http_port}", headers={"X-API-Key": key}, timeout=300
            )
            stub = verifier_pb2_grpc.VerifierServiceStub(grpc.insecure_channel(verifier.target))
            items = [
                verifier_pb2.VerifyItem(gold=g["answer"], pred=c) for g in groups for c in g["completions"]
            ]
            summary = http.post("/v1/score_groups", json={"groups": groups}).json()["summary"]  # warm-up
            score_s, verify_s = [], []
            for _ in range(args.requests):
                t = time.perf_counter()
                stub.Verify(verifier_pb2.VerifyRequest(items=items), timeout=300)
                verify_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = http.post("/v1/score_groups", json={"groups": groups})
                score_s.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
    q = statistics.quantiles(score_s, n=10)
    print(
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()}"
    )
    print(
        f"batch: {args.prompts} prompts x {args.group} = {summary['completions']} completions; "
        f"{summary['all_negative']} all-negative groups, {summary['colored']} colored, "
        f"{summary['colored_completions']} colored completions"
    )
    print(
        f"/v1/score_groups: median {statistics.median(score_s) * 1000:.1f} ms, p90 {q[-1] * 1000:.1f} ms "
        f"({args.requests} requests); one Verify call alone: median {statistics.median(verify_s) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
