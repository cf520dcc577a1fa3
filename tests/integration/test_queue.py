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
