#!/usr/bin/env python3
"""Host-side checks of scripts/compose-e2e.sh: what a user can see from outside the containers.

Every check talks to the published ports on 127.0.0.1 (given as arguments by the script, from
`docker compose port`): each service's /metrics, Redis, Prometheus's HTTP API, the judge's HTTP API.
Standard library plus redis-py (a dependency of the sgpo package). Exit 0 when the check passes; otherwise a
message saying what was expected and what was found, and exit 1.

  e2e_check.py metrics NAME=PORT ...          each service's /metrics answers with sgpo_ samples
  e2e_check.py wait-step PORT STEP TIMEOUT_S  the trainer's /metrics reports sgpo_trainer_step >= STEP
  e2e_check.py judge PORT KEY                 POST /v1/judge with the key -> 200 and a judgement; without -> 401
  e2e_check.py final --redis PORT --prometheus PORT --run-id ID --steps N --groups G --state FILE
                    --metrics-jsonl FILE --orchestrator-log FILE
                                              groups produced (orchestrator, Redis) == trained (trainer's final
                                              checkpoint, Prometheus), nothing pending, every service scraped
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

SERVICES = ("generator", "verifier", "judge", "orchestrator", "trainer")
ENQUEUED_KINDS = ("all_negative", "all_positive", "mixed", "unscorable")


class CheckFailed(Exception):
    pass


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric_value(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([0-9.eE+-]+|NaN)$", text, re.M)
    return float(m.group(1)) if m else None


# ---- per-service /metrics ----------------------------------------------------------------------------------
def check_metrics(pairs: list[str], timeout_s: float = 60.0) -> None:
    for pair in pairs:
        name, port = pair.split("=")
        deadline = time.monotonic() + timeout_s
        while True:  # a service just started may not listen yet
            try:
                status, body = http(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    raise CheckFailed(f"{name}: GET /metrics on 127.0.0.1:{port}: {e}") from None
                time.sleep(0.2)
        samples = [ln for ln in body.splitlines() if ln.startswith("sgpo_")]
        if status != 200 or not samples:
            raise CheckFailed(
                f"{name}: GET /metrics on 127.0.0.1:{port} -> {status}, {len(samples)} sgpo_ samples"
            )
        print(f"  {name:<13} /metrics on 127.0.0.1:{port}: {len(samples)} sgpo_ samples")


def wait_step(port: int, step: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    seen: float | None = None
    while time.monotonic() < deadline:
        try:
            _, body = http(f"http://127.0.0.1:{port}/metrics")
            seen = metric_value(body, "sgpo_trainer_step")
        except OSError:
            seen = None
        if seen is not None and seen >= step:
            print(f"  trainer at step {seen:.0f}")
            return
        time.sleep(0.2)
    raise CheckFailed(f"the trainer did not reach step {step} in {timeout_s:.0f}s (last seen: {seen})")


# ---- judge HTTP API ----------------------------------------------------------------------------------------
JUDGE_BODY = {  # the slip of tests/integration/test_judge_server.py: step 2 (index 1) is wrong
    "problem": "Start with 7. Add 5. Multiply by 3. Subtract 4.",
    "reference_solution": "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 32\nAnswer: 32",
    "items": [{"response": "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nStep 3: 35 - 4 = 31\nAnswer: 31"}],
}


def check_judge(port: int, key: str) -> None:
    url = f"http://127.0.0.1:{port}/v1/judge"
    body = json.dumps(JUDGE_BODY).encode()
    status, text = http(url, body, {"content-type": "application/json"})
    if status != 401:
        raise CheckFailed(f"POST /v1/judge without a key -> {status} (want 401): {text[:300]}")
    status, text = http(url, body, {"content-type": "application/json", "X-API-Key": key})
    if status != 200:
        raise CheckFailed(f"POST /v1/judge with the key -> {status}: {text[:500]}")
    reply = json.loads(text)
    j = reply["judgements"][0]
    if j["status"] != "ok" or j["first_error_step"] != 1:
        raise CheckFailed(f"the judge should find the slip at step 1: {j}")
    print(
        f"  POST /v1/judge: 401 without the key; with it 200, first_error_step=1 rts={j['rts']:.3f} reward={j['reward']:.3f}"
    )


# ---- the end of the run ------------------------------------------------------------------------------------
def prom(port: int, query: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, text = http(url)
    reply = json.loads(text)
    if status != 200 or reply.get("status") != "success":
        raise CheckFailed(f"Prometheus query {query!r} -> {status}: {text[:300]}")
    return list(reply["data"]["result"])


def prom_by_service(port: int, query: str) -> dict[str, float]:
    return {r["metric"].get("service", ""): float(r["value"][1]) for r in prom(port, query)}


def prom_by_kind(port: int, query: str) -> dict[str, float]:
    return {r["metric"].get("kind", ""): float(r["value"][1]) for r in prom(port, query)}


def prom_scalar(port: int, query: str) -> float | None:
    rows = prom(port, query)
    return float(rows[0]["value"][1]) if rows else None


def check_final(args: argparse.Namespace) -> None:
    import redis

    failures: list[str] = []
    window = "[2h]"

    # Prometheus scraped every service (up == 1 at least once, and sgpo_ samples stored for it)
    up = prom_by_service(args.prometheus, f'max_over_time(up{{job="sgpo"}}{window})')
    stored = prom_by_service(
        args.prometheus, f'count by (service) (last_over_time({{job="sgpo",__name__=~"sgpo_.+"}}{window}))'
    )
    for s in SERVICES:
        print(f"  prometheus: {s:<13} up={up.get(s, 0):.0f} series={stored.get(s, 0):.0f}")
        if up.get(s) != 1 or not stored.get(s):
            failures.append(f"Prometheus never scraped {s} (up={up.get(s)}, sgpo_ series={stored.get(s)})")

    # produced: the orchestrator's counters (Prometheus) and the run's Redis keys
    produced_metric = prom_scalar(
        args.prometheus,
        f'sum(max_over_time(sgpo_orchestrator_groups_total{{kind=~"{"|".join(ENQUEUED_KINDS)}"}}{window}))',
    )
    password = os.environ.get("SGPO_REDIS_PASSWORD") or None  # compose-e2e.sh exports the run's
    r = redis.Redis(host="127.0.0.1", port=args.redis, password=password, decode_responses=True)
    base = f"sgpo:{args.run_id}"
    produced_ids = r.smembers(f"{base}:group_ids")
    stream_len = r.xlen(f"{base}:groups")
    consumer_groups = r.xinfo_groups(f"{base}:groups")
    pending = sum(int(g["pending"]) for g in consumer_groups)
    lag = [g.get("lag") for g in consumer_groups]
    dead = r.xlen(f"{base}:dead") if r.exists(f"{base}:dead") else 0
    version = r.get(f"{base}:policy_version")
    print(
        f"  redis: group_ids={len(produced_ids)} stream={stream_len} pending={pending} lag={lag} dead={dead} "
        f"policy_version={version}"
    )
    print(
        f"  orchestrator: groups enqueued, as last scraped (sgpo_orchestrator_groups_total) = {produced_metric}"
    )

    # trained: the trainer's final checkpoint (one id list per step) and its metrics
    state = json.loads(Path(args.state).read_text())
    trained = [gid for ids in state["consumed"] for gid in ids]
    step = prom_scalar(args.prometheus, f"max_over_time(sgpo_trainer_step{window})")
    print(
        f"  trainer: final checkpoint step {state['step']}, {len(trained)} groups trained; max step metric {step}"
    )

    # the orchestrator's own count, from its last log line ("orchestrator done"): Prometheus may have
    # scraped it last a few groups before it finished and exited (5 s scrape interval)
    done = [
        json.loads(line[line.index("{") :])
        for line in Path(args.orchestrator_log).read_text(errors="replace").splitlines()
        if '"orchestrator done"' in line
    ]
    produced_log = done[-1]["enqueued"] if done else None
    print(f"  orchestrator: 'orchestrator done' log line: enqueued {produced_log}")
    want = args.groups
    if len(produced_ids) != want or produced_log != want:
        failures.append(
            f"groups produced: want {want}; Redis group_ids {len(produced_ids)}, orchestrator log {produced_log}"
        )
    if not produced_metric or produced_metric > want:
        failures.append(f"Prometheus's orchestrator group count is {produced_metric} (want 1..{want})")
    if len(trained) != len(set(trained)):
        failures.append("a group was trained twice (duplicate ids in the final checkpoint)")
    if set(trained) != produced_ids:
        failures.append(
            f"groups trained != groups produced: {len(set(trained))} trained, {len(produced_ids)} produced, "
            f"{len(produced_ids - set(trained))} never trained"
        )
    if state["step"] != args.steps:
        failures.append(
            f"the trainer should end at step {args.steps}: its last checkpoint is {state['step']}"
        )
    if pending or any(x not in (0, None) for x in lag) or dead:
        failures.append(f"Redis still holds work: pending={pending} lag={lag} dead letters={dead}")
    if version is None or int(version) != args.steps:
        failures.append(f"policy_version in Redis is {version}, want {args.steps}")

    # training figures, from inside the containers: the trainer's metrics.jsonl (one line per step), Prometheus
    for line in Path(args.metrics_jsonl).read_text().splitlines():
        rec = json.loads(line)
        extra = ", ".join(
            f"{k} {rec[k]:.3g}"
            for k in (
                "seconds",
                "frac_all_negative",
                "frac_colored",
                "frac_zero_std",
                "entropy",
                "policy_lag_mean",
            )
            if isinstance(rec.get(k), int | float)
        )
        print(
            f"  figure: step {rec['step']}: loss {rec.get('loss', float('nan')):.4f}, "
            f"{rec.get('tokens_per_s', float('nan')):.0f} tokens/s, {extra}"
        )
    kinds = prom_by_kind(args.prometheus, f"max_over_time(sgpo_orchestrator_groups_total{window})")
    print(f"  figure: orchestrator groups by kind {kinds}")

    if failures:
        raise CheckFailed("\n".join(failures))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("metrics")
    m.add_argument("pairs", nargs="+", help="NAME=PORT")
    w = sub.add_parser("wait-step")
    w.add_argument("port", type=int)
    w.add_argument("step", type=int)
    w.add_argument("timeout_s", type=float)
    j = sub.add_parser("judge")
    j.add_argument("port", type=int)
    j.add_argument("key")
    f = sub.add_parser("final")
    for name in ("redis", "prometheus", "steps", "groups"):
        f.add_argument(f"--{name}", type=int, required=True)
    f.add_argument("--run-id", required=True)
    f.add_argument("--state", required=True, help="trainer_state.json of the final checkpoint")
    f.add_argument("--metrics-jsonl", required=True, help="the trainer's metrics.jsonl of the run")
    f.add_argument("--orchestrator-log", required=True, help="`docker compose logs orchestrator-cpu`")
    args = p.parse_args(argv)
    try:
        if args.cmd == "metrics":
            check_metrics(args.pairs)
        elif args.cmd == "wait-step":
            wait_step(args.port, args.step, args.timeout_s)
        elif args.cmd == "judge":
            check_judge(args.port, args.key)
        else:
            check_final(args)
    except CheckFailed as e:
        print(f"e2e check {args.cmd} FAILED:\n{e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
