"""The orchestrator's pacer against the real Redis: backpressure and the staleness bound."""

from __future__ import annotations

import pytest

from sgpo.common.queue import GroupQueue
from sgpo.orchestrator.server import QueuePacer
from tests.unit.trainer.fixtures import make_group

pytestmark = pytest.mark.integration


def test_groups_a_trainer_holds_until_its_checkpoint_do_not_stall_the_orchestrator(
    redis_url: str, redis_prefix: str
) -> None:
    """sgpo train once deadlocked here: high_water 64 = 4 steps of 16 groups, trainer acks every 10 steps."""
    batch = 4
    producer = GroupQueue(redis_url, redis_prefix, consumer="orchestrator", high_water=2 * batch)
    trainer = GroupQueue(redis_url, redis_prefix, consumer="trainer-0")
    pacer = QueuePacer(producer, batch_groups=batch, max_policy_lag=1)
    made = 0
    for step in range(1, 6):  # five trainer steps, no checkpoint (no ack) in between
        while pacer.ready(made + 1):
            producer.put(make_group(f"g{made}"))
            made += 1
            assert made <= 64, "the pacer never pushed back"
        assert made == (step + 1) * batch  # one step ahead of the trainer: the staleness bound stops it
        assert producer.waiting() == 2 * batch
        assert len(trainer.read(count=batch, block_ms=100)) == batch
        trainer.set_policy_version(step)
    assert producer.stats().backlog == made  # nothing acknowledged, and production went on regardless


def test_backpressure_holds_while_groups_wait_undelivered(redis_url: str, redis_prefix: str) -> None:
    producer = GroupQueue(redis_url, redis_prefix, consumer="orchestrator", high_water=3)
    pacer = QueuePacer(producer, batch_groups=2, max_policy_lag=100)
    for i in range(3):
        producer.put(make_group(f"g{i}"))
    assert not pacer.ready(4)  # the staleness bound would allow it; the queue is full
    GroupQueue(redis_url, redis_prefix, consumer="trainer-0").read(count=1, block_ms=100)
    assert pacer.ready(4)


def test_min_version_is_the_staleness_bound_each_generator_replica_must_meet(
    redis_url: str, redis_prefix: str
) -> None:
    """Groups for trainer step s come from policy version >= s - max_policy_lag, on whichever replica samples
    them: `ready` checks the trainer's recorded version against it, the pool each replica's."""
    producer = GroupQueue(redis_url, redis_prefix, consumer="orchestrator")
    pacer = QueuePacer(producer, batch_groups=4, max_policy_lag=1)
    assert [pacer.min_version(n) for n in (1, 4, 5, 8, 9, 13)] == [-1, -1, 0, 0, 1, 2]
    assert pacer.ready(8) and not pacer.ready(9)  # recorded version 0: step 2 needs version 1
    producer.set_policy_version(1)
    assert pacer.ready(9) and not pacer.ready(13)
