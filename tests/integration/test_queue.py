"""GroupQueue under stress against the real Redis: competing consumers, a dying one, dropped connections."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from sgpo.common.queue import GroupQueue
from tests.unit.common.test_queue import wait_below_high_water
from tests.unit.trainer.fixtures import make_group

pytestmark = pytest.mark.integration


def _kill_connections(redis_url: str, name: str) -> int:
    admin = redis.Redis.from_url(redis_url)
    killed = 0
    for c in admin.client_list():
        if c.get("name") == name:
            killed += int(admin.client_kill_filter(_id=c["id"]))
    return killed


def test_competing_consumers_with_one_dying_process_every_group_exactly_once(
    redis_url: str, redis_prefix: str
) -> None:
    """Producer with backpressure, two consumers; one dies holding unacknowledged groups, the other reclaims."""
    n = 120
    producer = GroupQueue(redis_url, redis_prefix, consumer="producer", high_water=16)
    committed: dict[str, list[str]] = {"a": [], "b": []}
    max_backlog = 0

    def produce() -> None:
        nonlocal max_backlog
        for i in range(n):
            assert wait_below_high_water(producer, timeout=30)
            max_backlog = max(max_backlog, producer.waiting())
            assert producer.put(make_group(f"g{i:03d}", size=2)).status == "queued"

    def consume(name: str, die_after: int | None) -> None:
        q = GroupQueue(redis_url, redis_prefix, consumer=name, claim_idle_ms=400)
        done = 0
        idle_rounds = 0
        while idle_rounds < 8:
            entries = q.reclaim(count=8) + q.read(count=4, block_ms=100)
            if not entries:
                idle_rounds += 1
                continue
            idle_rounds = 0
            if die_after is not None and done >= die_after:
                return  # dies holding `entries`: never committed, never acknowledged
            committed[name].extend(e.group.group_id for e in entries)  # "checkpoint", then ack
            q.ack([e.entry_id for e in entries])
            done += len(entries)

    threads = [
        threading.Thread(target=produce),
        threading.Thread(target=consume, args=("a", 20)),
        threading.Thread(target=consume, args=("b", None)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    everything = committed["a"] + committed["b"]
    assert sorted(everything) == [f"g{i:03d}" for i in range(n)]  # none lost, none twice
    assert committed["a"] and len(committed["b"]) > len(committed["a"])
    assert max_backlog <= 16 + 1  # the producer checked the mark before each put
    stats = producer.stats()
    assert (stats.pending, stats.lag, stats.dead) == (0, 0, 0)


def test_a_blocking_read_survives_a_dropped_connection(redis_url: str, redis_prefix: str) -> None:
    q = GroupQueue(redis_url, redis_prefix, consumer="reader")
    q.ensure_consumer_group()
    got: list[str] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                got.extend(e.group.group_id for e in q.read(count=1, block_ms=5000))
        except BaseException as e:  # the test fails below if the read raised
            errors.append(e)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.5)  # the reader is blocked in XREADGROUP now
    name = f"sgpo-{redis_prefix}-reader"
    assert _kill_connections(redis_url, name) >= 1
    time.sleep(0.3)
    GroupQueue(redis_url, redis_prefix, consumer="producer").put(make_group("after-drop"))
    t.join(30)
    assert errors == []
    assert got == ["after-drop"]
    # The client reconnected under the same name and keeps working.
    assert q.stats().pending == 1


# ---------------------------------------------------------------- Redis restarted empty (docs/design.md §5)
def _forget_everything(redis_url: str, run_id: str) -> None:
    """What a Redis restarted empty looks like to this run: none of its keys."""
    admin = redis.Redis.from_url(redis_url)
    keys = list(admin.scan_iter(match=f"sgpo:{run_id}:*", count=1000))
    assert keys
    admin.delete(*keys)


def test_a_consumer_recreates_its_group_when_redis_loses_it(redis_url: str, redis_prefix: str) -> None:
    """The queue once cached "the group exists" forever: after an empty restart every read was NOGROUP."""
    producer = GroupQueue(redis_url, redis_prefix, consumer="producer")
    trainer = GroupQueue(redis_url, redis_prefix, consumer="trainer", claim_idle_ms=1)
    producer.put(make_group("before"))
    [entry] = trainer.read(count=10, block_ms=100)
    assert entry.group.group_id == "before"
    _forget_everything(redis_url, redis_prefix)
    # every consumer-side call meets NOGROUP once, recreates the group and goes on
    assert trainer.read_own_pending() == []
    trainer.touch([entry.entry_id])
    assert trainer.reclaim() == []
    assert producer.put(make_group("before")).status == "queued"  # the dedupe set went too
    producer.put(make_group("after"))
    got = [e.group.group_id for e in trainer.read(count=10, block_ms=100)]
    assert got == ["before", "after"]  # from the stream's start: nothing queued meanwhile is skipped
    _forget_everything(redis_url, redis_prefix)
    producer.put(make_group("later"))
    assert [e.group.group_id for e in trainer.read(count=10, block_ms=100)] == ["later"]
    assert trainer.ack([entry.entry_id]) == 0  # an entry of the old stream: nothing to acknowledge


def test_the_policy_version_is_set_again_only_when_it_is_missing(redis_url: str, redis_prefix: str) -> None:
    q = GroupQueue(redis_url, redis_prefix)
    assert not q.has_policy_version() and q.read_policy_version() == 0
    q.set_policy_version(5)
    assert q.ensure_policy_version(3) is False and q.read_policy_version() == 5  # never overwritten
    _forget_everything(redis_url, redis_prefix)
    assert q.read_policy_version() == 0  # an orchestrator would wait for version >= s - lag forever
    assert q.ensure_policy_version(5) is True and q.read_policy_version() == 5


def test_missing_ids_and_the_acknowledged_frontier(redis_url: str, redis_prefix: str) -> None:
    """What the orchestrator uses to find groups Redis lost and to forget the acknowledged ones."""
    producer = GroupQueue(redis_url, redis_prefix, consumer="producer")
    trainer = GroupQueue(redis_url, redis_prefix, consumer="trainer")
    assert producer.acked_frontier() == (0, 0)  # no consumer group yet: nothing acknowledged
    ids = [producer.put(make_group(f"g{i}")).entry_id for i in range(4)]
    assert producer.missing(["g0", "g3", "nope"]) == ["nope"]
    assert producer.put(make_group("g1")).status == "duplicate" and producer.last_entry_id() == ids[-1]
    entries = trainer.read(count=3, block_ms=100)
    trainer.ack([entries[0].entry_id, entries[1].entry_id])
    frontier = producer.acked_frontier()  # below the oldest still pending (g2)
    key = [tuple(int(x) for x in i.split("-")) for i in ids]
    assert key[0] < frontier and key[1] < frontier and not key[2] < frontier and not key[3] < frontier
    _forget_everything(redis_url, redis_prefix)
    assert producer.missing([f"g{i}" for i in range(4)]) == [f"g{i}" for i in range(4)]


# ---------------------------------------------------------------- passwords
def _redis_with_password(tmp_path, password: str):  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    from sgpo.common.ports import free_port

    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_a_password_from_the_url_the_environment_or_a_file_and_never_in_an_error(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from sgpo.common.queue import redact_url, split_password
    from sgpo.core.errors import InvalidInputError

    secret = "pw-7c2e-never-logged"
    proc, port = _redis_with_password(tmp_path, secret)
    try:
        bare = f"redis://127.0.0.1:{port}/0"
        monkeypatch.delenv("SGPO_REDIS_PASSWORD", raising=False)
        with pytest.raises(redis.AuthenticationError) as e:  # no password: refused, and says nothing of it
            GroupQueue(bare, "pw").read_policy_version()
        assert secret not in str(e.value)
        assert GroupQueue(f"redis://:{secret}@127.0.0.1:{port}/0", "pw").read_policy_version() == 0
        (tmp_path / "pw").write_text(secret + "\n")
        assert GroupQueue(bare, "pw", password_file=tmp_path / "pw").reachable()
        monkeypatch.setenv("SGPO_REDIS_PASSWORD", secret)
        q = GroupQueue(bare, "pw")
        q.set_policy_version(2)
        assert q.read_policy_version() == 2 and q.reachable()
        monkeypatch.setenv("SGPO_REDIS_PASSWORD", "wrong")
        assert not GroupQueue(bare, "pw").reachable()
        with pytest.raises(InvalidInputError) as bad:
            GroupQueue(f"http://:{secret}@host/0", "pw")
        assert secret not in str(bad.value) and "***" in str(bad.value)
        with pytest.raises(InvalidInputError) as missing:
            GroupQueue(bare, "pw", password_file=tmp_path / "absent")
        assert "absent" in str(missing.value)
    finally:
        proc.kill()
        proc.wait(10)
    assert redact_url(f"redis://user:{secret}@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url(f"rediss://:{secret}@h:1/0?password={secret}") == "rediss://:***@h:1/0?password=***"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert split_password(f"redis://:{secret}@h:1/0") == ("redis://h:1/0", secret)


@pytest.mark.slow  # a trainer process (~15-40 s here); the e2e fault test runs the same path inside `sgpo train`
def test_a_trainer_goes_on_after_redis_loses_everything(tmp_path, redis_url: str, redis_prefix: str) -> None:  # type: ignore[no-untyped-def]
    """`sgpo serve trainer` as a real process: after the run's keys vanish (Redis back empty) it re-sets the
    policy version it owns, recreates its consumer group, skips a re-queued group it already trained, and
    trains the new ones."""
    import os
    import subprocess

    from sgpo.trainer.checkpoint import latest_checkpoint, load_state
    from tests.support import free_port, sgpo_cmd
    from tests.unit.trainer.fixtures import read_metrics, tiny_policy, trainer_env

    policy = tiny_policy(tmp_path / "policy")
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        **trainer_env(
            policy, run_dir, redis_prefix, redis_url, batch_groups=2, max_steps=2, checkpoint_every=1,
            claim_idle_ms=1000, port=free_port(), metrics_port=0,
        ),
    }  # fmt: skip
    queue = GroupQueue(redis_url, redis_prefix, consumer="test")
    queue.put(make_group("g0"))
    queue.put(make_group("g1"))
    with (tmp_path / "trainer.log").open("wb") as log:
        proc = subprocess.Popen(sgpo_cmd("serve", "trainer"), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (len(read_metrics(run_dir)) == 1 and queue.read_policy_version() == 1):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()
            time.sleep(0.1)
        time.sleep(0.5)  # step 1's checkpoint acknowledged
        _forget_everything(redis_url, redis_prefix)
        deadline = time.monotonic() + 30
        while not queue.has_policy_version():  # the trainer's heartbeat (claim_idle_ms / 4)
            assert proc.poll() is None and time.monotonic() < deadline, "policy_version never set again"
            time.sleep(0.05)
        assert queue.read_policy_version() == 1
        queue.put(make_group("g1"))  # re-queued by an orchestrator that lost it: trained already
        queue.put(make_group("g2"))
        queue.put(make_group("g3"))
        assert proc.wait(120) == 0  # max_steps = 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and load_state(ckpt).consumed == [["g0", "g1"], ["g2", "g3"]]
    log_text = (tmp_path / "trainer.log").read_text()
    assert (
        "policy_version was missing" in log_text and "skipped a group already in the checkpoint" in log_text
    )
    assert queue.stats().backlog == 0
