"""`sgpo train` survives Redis going away: a `redis-server` of the test's own (password, append-only file) is
killed with SIGKILL during the run and restarted, first empty, then from its append-only file.

Then the orchestrator is killed too, and resumes at its saved position (not at the dataset's start).
The run must complete with no service dying of the outages (only the killed orchestrator restarted), the groups
the trainer trained must be exactly the groups the orchestrator produced minus the ones still queued, no group
id trained twice, and the only re-queued groups those the empty Redis lost (the documented window,
docs/design.md §5): at most the groups outstanding (queued, not yet acknowledged) when it went away. The
password never appears in any log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from sgpo.common.ports import free_port
from tests.support import sgpo_cmd

pytestmark = pytest.mark.e2e

PASSWORD = "fault-test-s3cret-7f1d"
BATCH = 4
STEPS = 14  # room after the last event: at 10 a fast run reached its end before the orchestrator was killed (1 in 38 here)
RECIPE = f"""
[recipe]
name = "redis-faults"
policy = "tiny-random"
algo = "sgpo"
steps = {STEPS}
batch_groups = {BATCH}
group_size = 4
lr = 3e-4
max_tokens = 24
temperature = 1.0
checkpoint_every = 2
max_policy_lag = 1

[recipe.data]
task = "arith"
levels = [2, 3]
train_per_level = 40
eval_per_level = 2

[recipe.eval]
every = 100
samples = 1
temperature = 1.0

[trainer]
micro_batch_size = 16
max_seq_len = 256
"""


class RedisServer:
    """redis-server on a free loopback port with a password and an append-only file in `folder`."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", PASSWORD,
                "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder),
                "--save", "", "--daemonize", "no", "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = self.client()
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    return
            except redis.BusyLoadingError:
                pass
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=PASSWORD, socket_timeout=5)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


OUTAGE_S = 8.0  # past redis-py's own retries (a few seconds): the services see the outage


def health(run_dir: Path, name: str) -> str:
    """The gRPC health status of a service of the run ("UNREACHABLE" if it does not answer)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = json.loads((run_dir / "logs" / "services.json").read_text())[name]["port"]
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


def wait_health(run_dir: Path, want: str, timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while True:
        now = {name: health(run_dir, name) for name in ("orchestrator", "trainer")}
        if all(v == want for v in now.values()) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def read_jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def step(run_dir: Path) -> int:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    return rows[-1]["step"] if rows else 0


def final_consumed(run_dir: Path) -> list[str]:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    state = json.loads((ckpts[-1] / "trainer_state.json").read_text())
    return [g for ids in state["consumed"] for g in ids]


def test_train_survives_redis_killed_and_restarted_empty_then_from_its_aof(tmp_path: Path) -> None:
    port = free_port()
    first = RedisServer(tmp_path / "redis-1", port)
    second = RedisServer(tmp_path / "redis-2", port)  # a new folder: back empty
    first.start()
    run_dir = tmp_path / f"faults-{os.getpid()}"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    events: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    outstanding_when_lost: list[int] = []
    health_seen: list[dict[str, str]] = []

    def chaos() -> None:
        try:
            deadline = time.monotonic() + 300
            while step(run_dir) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            state = json.loads((run_dir / "orchestrator_state.json").read_text())
            first.kill()
            events.append(("killed", step(run_dir)))
            t0 = time.monotonic()
            health_seen.append(wait_health(run_dir, "NOT_SERVING", OUTAGE_S - 2))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - t0)))
            second.start()  # (a) empty
            health_seen.append(wait_health(run_dir, "SERVING", 30))
            # what the empty Redis lost, as the orchestrator knew it just before (an upper bound: it only grows
            # until the next chunk is saved, by at most the chunks in flight)
            outstanding_when_lost.append(len(state["outstanding"]))
            events.append(("back empty", step(run_dir)))
            at = step(run_dir)
            while step(run_dir) < at + 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            second.kill()
            events.append(("killed", step(run_dir)))
            time.sleep(OUTAGE_S)
            second.start()  # (b) from its append-only file
            events.append(("back from AOF", step(run_dir)))
            # and the orchestrator killed: restarted by `sgpo train`, it resumes at its saved position
            at = step(run_dir)
            while step(run_dir) < at + 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            services = json.loads((run_dir / "logs" / "services.json").read_text())
            os.kill(services["orchestrator"]["pid"], signal.SIGKILL)
            events.append(("orchestrator killed", step(run_dir)))
        except BaseException as e:
            errors.append(e)

    env = {
        **os.environ,
        "SGPO_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
    }
    env.pop("SGPO_REDIS_PASSWORD", None)
    chaos_thread = threading.Thread(target=chaos, daemon=True)  # a failed run does not wait out its deadline
    proc = subprocess.Popen(
        sgpo_cmd(
            "train", "--recipe", str(recipe), "--run-dir", str(run_dir), "--eval-every", "100",
            "--eval-samples", "1", "--tracking", "none",
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        chaos_thread.start()
        output, _ = proc.communicate(timeout=400)
        chaos_thread.join(10)
        assert not errors, errors
        assert proc.returncode == 0, output[-4000:]
        assert [e for e, _ in events] == [
            "killed",
            "back empty",
            "killed",
            "back from AOF",
            "orchestrator killed",
        ], events
        assert events[-1][1] < STEPS, f"the run ended before the second restart: {events}"
        # health: NOT_SERVING while the queue was unreachable, SERVING again once it answered
        assert health_seen == [
            {"orchestrator": "NOT_SERVING", "trainer": "NOT_SERVING"},
            {"orchestrator": "SERVING", "trainer": "SERVING"},
        ], health_seen
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == STEPS
        # nothing died of the outages: only the orchestrator we killed was restarted
        assert summary["restarts"].get("orchestrator") == 1 and not summary["restarts"].get("trainer"), (
            summary
        )

        trained = final_consumed(run_dir)
        assert len(trained) == len(set(trained)) == STEPS * BATCH, "a group was trained twice or lost"
        rows = read_jsonl(run_dir / "groups.jsonl")
        produced = {r["group_id"] for r in rows}
        assert set(trained) <= produced
        # every group id names its slot: {run}-e{epoch}-p{row}-a{attempt}
        assert all(g.startswith(f"{run_dir.name}-e0-p") and g.endswith("-a0") for g in produced)
        # produced, not trained: still in the queue (the orchestrator runs ahead of the trainer)
        client = second.client()
        stream = [e[1][b"group_id"].decode() for e in client.xrange(f"sgpo:{run_dir.name}:groups")]
        assert len(stream) == len(set(stream)), "a group queued twice since the empty restart"
        queued = set(stream)
        assert produced - set(trained) <= queued
        # the only groups queued twice are those the empty Redis lost, re-sampled under their own ids
        first_time = [r for r in rows if not r["requeued"]]
        assert len(first_time) == len(produced)
        requeued = [r["group_id"] for r in rows if r["requeued"]]
        assert len(requeued) == len(set(requeued)) and set(requeued) <= produced
        assert len(requeued) <= outstanding_when_lost[0] + 2 * BATCH, (len(requeued), outstanding_when_lost)
        print(
            f"redis faults: events {events}; groups produced {len(produced)}, trained {len(trained)} "
            f"(distinct {len(set(trained))}), still queued {len(produced - set(trained))}; re-sampled after the "
            f"empty restart {len(requeued)} (outstanding when lost {outstanding_when_lost[0]})"
        )  # the figures, with -s
        # health said NOT_SERVING during the outage, and the services said so once per outage, not per retry
        logs = {p.name: p.read_text(errors="replace") for p in (run_dir / "logs").glob("*.log")}
        assert 1 <= logs["orchestrator.log"].count("queue unreachable") <= 2  # once per outage
        # the trainer warns only if a call of its own failed: its client's retries (8, backoff up to 2 s) may
        # outlast an outage it met while training or checkpointing (seen in CI: 0 warnings, run complete)
        assert logs["trainer.log"].count("redis unavailable") <= 2
        assert "re-sampling them" in logs["orchestrator.log"]
        resumed = [
            json.loads(x) for x in logs["orchestrator.log"].splitlines() if "resuming the dataset" in x
        ]
        assert len(resumed) == 1 and "at slot 0 " not in resumed[0]["msg"], resumed  # not from the start
        # the password: in no log, no config file, no output
        for name, text in {**logs, "stdout": output, "run.toml": (run_dir / "run.toml").read_text()}.items():
            assert PASSWORD not in text, f"the Redis password leaked into {name}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for server in (first, second):
            if server.proc is not None and server.proc.poll() is None:
                server.kill()
