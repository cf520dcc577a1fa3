"""GroupQueue against the real Redis: put/read/ack, dedupe, dead letters, pending re-reads, reclaim, trimming."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from sgpo.common.queue import GroupQueue, queue_keys
from sgpo.core import InvalidInputError
from tests.unit.trainer.fixtures import make_group

pytestmark = pytest.mark.integration


def _queue(redis_url: str, run_id: str, consumer: str = "c1", **kw: object) -> GroupQueue:
    return GroupQueue(redis_url, run_id, consumer=consumer, **kw)  # type: ignore[arg-type]


def wait_below_high_water(q: GroupQueue, timeout: float, poll_s: float = 0.05) -> bool:
    """What a producer does before `put` (the orchestrator's QueuePacer does it with the staleness bound)."""
    deadline = time.monotonic() + timeout
    while q.waiting() >= q.high_water:
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return True


def dead_letters(q: GroupQueue) -> list[dict[str, str]]:
    """The dead-letter stream's entries without payloads, newest first (as an operator reads it with XREVRANGE)."""
    rows = q.client.xrevrange(q.dead, count=100)
    return [{k.decode(): v.decode() for k, v in fields.items() if k != b"data"} for _, fields in rows]


def test_put_read_ack_round_trip(redis_url: str, redis_prefix: str) -> None:
    q = _queue(redis_url, redis_prefix)
    groups = [make_group(f"g{i}", size=3) for i in range(3)]
    results = [q.put(g) for g in groups]
    assert [r.status for r in results] == ["queued"] * 3
    entries = q.read(count=10, block_ms=100)
    assert [e.group for e in entries] == groups
    assert [e.entry_id for e in entries] == [r.entry_id for r in results]
    assert all(e.delivery == "new" for e in entries)
    stats = q.stats()
    assert (stats.length, stats.lag, stats.pending, stats.backlog) == (3, 0, 3, 3)
    assert q.ack([e.entry_id for e in entries]) == 3
    assert q.ack([entries[0].entry_id]) == 0  # already acknowledged
    assert q.stats().backlog == 0
    assert q.read(count=10, block_ms=50) == []


def test_a_group_id_is_queued_once(redis_url: str, redis_prefix: str) -> None:
    q = _queue(redis_url, redis_prefix)
    g = make_group("same")
    assert q.put(g).status == "queued"
    assert q.put(g).status == "duplicate"
    assert q.put(make_group("same", seed=1)).status == "duplicate"  # same id, other content
    assert q.stats().length == 1


def test_oversized_and_undecodable_entries_are_dead_lettered_and_reading_goes_on(
    redis_url: str, redis_prefix: str
) -> None:
    q = _queue(redis_url, redis_prefix, max_entry_bytes=2000)
    big = make_group("big", size=4, completion_len=(200, 200))
    put = q.put(big)
    assert put.status == "dead_letter" and "oversized" in put.reason and "max_entry_bytes 2000" in put.reason
    # Entries written by something other than put(): garbage, no data field, too big for this consumer.
    client = redis.Redis.from_url(redis_url)
    stream = queue_keys(redis_prefix)["groups"]
    client.xadd(stream, {"group_id": "junk", "data": b"\xff\x00not a protobuf"})
    client.xadd(stream, {"group_id": "nodata"})
    from sgpo.common.convert import group_to_bytes

    client.xadd(stream, {"group_id": "big2", "data": group_to_bytes(big)})
    assert q.put(make_group("fine")).status == "queued"
    entries = q.read(count=10, block_ms=100)
    assert [e.group.group_id for e in entries] == ["fine"]
    stats = q.stats()
    assert stats.dead == 4
    assert stats.pending == 1  # only the good entry waits for its ack; the dead ones were acknowledged
    reasons = {d["group_id"]: d["reason"] for d in dead_letters(q)}
    assert reasons["big"].startswith("oversized") and reasons["big2"].startswith("oversized")
    assert reasons["junk"].startswith("undecodable")
    assert "no 'data' field" in reasons["nodata"]


def test_a_restarted_consumer_rereads_its_own_pending_entries(redis_url: str, redis_prefix: str) -> None:
    q = _queue(redis_url, redis_prefix, consumer="trainer-a")
    for i in range(4):
        q.put(make_group(f"g{i}"))
    first = q.read(count=3, block_ms=100)
    q.ack([first[1].entry_id])
    again = _queue(redis_url, redis_prefix, consumer="trainer-a")  # same name: a restart
    pending = again.read_own_pending()
    assert [e.entry_id for e in pending] == [first[0].entry_id, first[2].entry_id]
    assert all(e.delivery == "own_pending" for e in pending)
    assert [e.group.group_id for e in again.read(count=10, block_ms=50)] == ["g3"]
    other = _queue(redis_url, redis_prefix, consumer="trainer-b")
    assert other.read_own_pending() == []


def test_reclaim_takes_idle_entries_but_not_touched_ones(redis_url: str, redis_prefix: str) -> None:
    a = _queue(redis_url, redis_prefix, consumer="a", claim_idle_ms=300)
    b = _queue(redis_url, redis_prefix, consumer="b", claim_idle_ms=300)
    for i in range(4):
        a.put(make_group(f"g{i}"))
    held = a.read(count=4, block_ms=100)
    assert b.reclaim() == []  # not idle yet
    time.sleep(0.2)
    a.touch([held[0].entry_id, held[1].entry_id])  # a is alive and still holds these two
    time.sleep(0.2)
    got = b.reclaim()
    assert sorted(e.group.group_id for e in got) == ["g2", "g3"]
    assert all(e.delivery == "reclaimed" for e in got)
    assert b.reclaim() == []  # b owns them now, and they are fresh


def test_trim_never_drops_unacknowledged_entries(redis_url: str, redis_prefix: str) -> None:
    q = _queue(redis_url, redis_prefix)
    ids = [q.put(make_group(f"g{i}")).entry_id for i in range(5)]
    assert q.trim_acked() == 0
    entries = q.read(count=3, block_ms=100)
    q.ack([ids[1]])
    assert q.trim_acked() == 0  # g0 is still pending, so nothing before it may go
    q.ack([ids[0]])
    assert q.trim_acked() == 2  # g0, g1
    q.ack([entries[2].entry_id])
    assert q.trim_acked() == 1  # g2; g3 and g4 were never delivered
    stats = q.stats()
    assert (stats.length, stats.lag, stats.pending) == (2, 2, 0)
    assert [e.group.group_id for e in q.read(count=10, block_ms=50)] == ["g3", "g4"]


def test_producer_waits_below_high_water_until_the_consumer_reads(redis_url: str, redis_prefix: str) -> None:
    producer = _queue(redis_url, redis_prefix, consumer="p", high_water=3)
    consumer = _queue(redis_url, redis_prefix, consumer="c", high_water=3)
    for i in range(3):
        producer.put(make_group(f"g{i}"))
    assert producer.stats().backlog == producer.waiting() == 3
    assert wait_below_high_water(producer, timeout=0.2) is False
    released = threading.Event()

    def wait() -> None:
        if wait_below_high_water(producer, timeout=10):
            released.set()

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    assert not released.is_set()
    # Delivered and not yet acknowledged (a trainer holds groups until its next checkpoint): that frees room,
    # or a trainer checkpointing every 10 steps would wait forever for groups a stalled producer never makes.
    consumer.read(count=1, block_ms=100)
    t.join(10)
    assert released.is_set()
    assert (producer.waiting(), producer.stats().backlog) == (2, 3)


def test_trim_survives_the_last_pending_entry_being_acknowledged_meanwhile(
    redis_url: str, redis_prefix: str
) -> None:
    """Two trainers: one trims while the other acknowledges its last pending entry between trim's two reads
    (xinfo_groups said 1 pending, xpending then has none). A trainer crashed on that once."""
    trimmer = _queue(redis_url, redis_prefix, consumer="a")
    other = _queue(redis_url, redis_prefix, consumer="b")
    trimmer.put(make_group("g0"))
    trimmer.put(make_group("g1"))
    [e0] = trimmer.read(count=1, block_ms=100)
    trimmer.ack([e0.entry_id])
    [e1] = other.read(count=1, block_ms=100)
    real_xpending = trimmer.client.xpending

    def ack_first(*args: object) -> object:  # the other trainer's checkpoint lands right here
        other.ack([e1.entry_id])
        return real_xpending(*args)

    trimmer.client.xpending = ack_first  # type: ignore[method-assign]
    assert trimmer.trim_acked() == 2
    assert trimmer.stats().length == 0


def test_policy_version_round_trip(redis_url: str, redis_prefix: str) -> None:
    q = _queue(redis_url, redis_prefix)
    assert q.read_policy_version() == 0
    q.set_policy_version(3)
    assert q.read_policy_version() == 3
    q.set_policy_version(2)  # a trainer resumed from an older checkpoint
    assert GroupQueue(redis_url, redis_prefix).read_policy_version() == 2
    with pytest.raises(InvalidInputError, match="version"):
        q.set_policy_version(-1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"run_id": ""}, "run_id"),
        ({"run_id": "a b"}, "run_id"),
        ({"high_water": 0}, "high_water"),
        ({"max_entry_bytes": 0}, "max_entry_bytes"),
        ({"claim_idle_ms": 0}, "claim_idle_ms"),
        ({"redis_url": "localhost:6379"}, "redis_url"),
    ],
)
def test_bad_arguments_name_the_field(redis_url: str, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"redis_url": redis_url, "run_id": "ok"}
    args.update(kwargs)
    with pytest.raises(InvalidInputError) as e:
        GroupQueue(**args)  # type: ignore[arg-type]
    assert e.value.field == field


def test_put_needs_a_group_id(redis_url: str, redis_prefix: str) -> None:
    q = _queue(redis_url, redis_prefix)
    with pytest.raises(InvalidInputError, match="group_id"):
        q.put(make_group(""))
