"""The orchestrator's durable position: slots, deterministic group ids, the saved progress, lost groups.

Real Redis (the queue), real files; the loop's Generate/Verify path is covered by the integration and e2e
tests (tests/e2e/test_train_redis_faults.py kills Redis under a real run).
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import pytest
import redis

from sgpo.common.queue import GroupQueue
from sgpo.core.errors import InvalidInputError
from sgpo.orchestrator.config import OrchestratorConfig
from sgpo.orchestrator.dataset import Prompt, iterate_epochs, load_prompts
from sgpo.orchestrator.loop import (
    Orchestrator,
    Slot,
    iterate_slots,
    read_progress_file,
    slot_at,
    slot_group_id,
)
from sgpo.orchestrator.server import QueueSink
from tests.unit.trainer.fixtures import make_group

ROWS = 7


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(json.dumps({"problem": f"{i} + 1", "answer": str(i + 1)}) + "\n" for i in range(ROWS))
    )
    return path


def cfg(
    dataset: Path, run_id: str, redis_url: str = "redis://127.0.0.1:6379/0", **kw: object
) -> OrchestratorConfig:
    return OrchestratorConfig(
        dataset=dataset, run_id=run_id, redis_url=redis_url, prompts_per_request=3, **kw
    )  # type: ignore[arg-type]


def test_slots_follow_the_epoch_order_and_resume_anywhere(dataset: Path) -> None:
    prompts = load_prompts(dataset)
    slots = list(iterate_slots(prompts, epochs=3, shuffle=True, seed=5))
    # the same order as iterate_epochs, with each prompt's row and sequence number
    assert [(s.epoch, s.prompt) for s in slots] == list(iterate_epochs(prompts, 3, True, 5))
    assert [s.seq for s in slots] == list(range(3 * ROWS))
    assert all(prompts[s.row] == s.prompt for s in slots)
    assert sorted(s.row for s in slots if s.epoch == 1) == list(range(ROWS))
    for start in (0, 4, ROWS, ROWS + 3, 3 * ROWS - 1):
        assert list(iterate_slots(prompts, 3, True, 5, start=start)) == slots[start:]
        assert slot_at(prompts, True, 5, start) == slots[start]
    assert list(iterate_slots(prompts, 3, True, 5, start=3 * ROWS)) == []
    forever = list(islice(iterate_slots(prompts, 0, True, 5, start=2 * ROWS), ROWS + 1))
    assert forever[:ROWS] == slots[2 * ROWS :] and forever[-1].epoch == 3


def test_group_ids_are_deterministic_per_run_epoch_row_and_attempt() -> None:
    slot = Slot(seq=9, epoch=1, row=2, prompt=Prompt("x", "1 + 1", "2"))
    assert slot.group_id("run-a") == "run-a-e1-p2-a0" == slot_group_id("run-a", 1, 2)
    assert Slot(9, 1, 2, slot.prompt, attempt=1).group_id("run-a") == "run-a-e1-p2-a1"


def test_progress_is_saved_locally_and_in_redis_and_resumed_from_the_further_one(
    dataset: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    state = tmp_path / "state.json"
    c = cfg(dataset, redis_prefix, redis_url, state_path=state)
    sink = QueueSink(GroupQueue(redis_url, redis_prefix))
    first = Orchestrator(c, sink)
    progress = first._resume(load_prompts(dataset))
    assert progress.next_seq == 0 and progress.outstanding == {}
    progress.next_seq, first.stats.enqueued = 6, 5
    first._sync_outstanding(load_prompts(dataset))
    saved = read_progress_file(state)
    assert saved is not None and saved["next_seq"] == 6 and saved["enqueued"] == 5
    assert sink.load_progress() == saved  # the same, in Redis

    # Redis came back empty: the local copy still knows the position
    redis.Redis.from_url(redis_url).delete(sink.progress_key)
    second = Orchestrator(c, QueueSink(GroupQueue(redis_url, redis_prefix)))
    assert second._resume(load_prompts(dataset)).next_seq == 6
    # the local file lost (a new pod without its volume): Redis's copy
    state.unlink()
    sink.save_progress(saved)
    third = Orchestrator(c, QueueSink(GroupQueue(redis_url, redis_prefix)))
    assert third._resume(load_prompts(dataset)).next_seq == 6
    # both, apart: the further one
    sink.save_progress({**saved, "next_seq": 9})
    state.write_text(json.dumps(saved))
    assert Orchestrator(c, sink)._resume(load_prompts(dataset)).next_seq == 9


def test_a_saved_position_of_another_dataset_or_order_is_refused(
    dataset: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    state = tmp_path / "state.json"
    c = cfg(dataset, redis_prefix, redis_url, state_path=state)
    o = Orchestrator(c, QueueSink(GroupQueue(redis_url, redis_prefix)))
    o._resume(load_prompts(dataset))
    o._sync_outstanding(load_prompts(dataset))
    reseeded = cfg(dataset, redis_prefix, redis_url, state_path=state, seed=1)
    with pytest.raises(InvalidInputError, match="another dataset or order"):
        Orchestrator(reseeded, QueueSink(GroupQueue(redis_url, redis_prefix)))._resume(load_prompts(dataset))


def test_lost_groups_are_resampled_under_their_ids_and_acknowledged_ones_forgotten(
    dataset: Path, tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    prompts = load_prompts(dataset)
    c = cfg(dataset, redis_prefix, redis_url, state_path=tmp_path / "state.json")
    queue = GroupQueue(redis_url, redis_prefix)
    o = Orchestrator(c, QueueSink(queue))
    progress = o._resume(prompts)
    slots = list(iterate_slots(prompts, 1, c.shuffle, c.seed))[:4]
    for slot in slots:  # as _emit records them
        entry = queue.put(make_group(slot.group_id(redis_prefix))).entry_id
        progress.outstanding[slot.group_id(redis_prefix)] = [slot.seq, slot.attempt, entry]
    progress.next_seq = 4
    trainer = GroupQueue(redis_url, redis_prefix, consumer="trainer")
    taken = trainer.read(count=2, block_ms=100)
    trainer.ack([e.entry_id for e in taken])  # the first two are durable in a checkpoint
    o._sync_outstanding(prompts)
    assert sorted(progress.outstanding) == sorted(s.group_id(redis_prefix) for s in slots[2:])
    assert not o._redo

    keys = list(redis.Redis.from_url(redis_url).scan_iter(match=f"sgpo:{redis_prefix}:*"))
    redis.Redis.from_url(redis_url).delete(*keys)  # Redis back empty
    o._sync_outstanding(prompts)
    assert list(o._redo) == slots[2:]  # re-sampled first, under the same ids; nothing else
    assert all(progress.outstanding[s.group_id(redis_prefix)][2] is None for s in slots[2:])
    o._sync_outstanding(prompts)  # asked again: not scheduled twice
    assert list(o._redo) == slots[2:]
    # a loop stopped while re-sampling saved them as such: the next one re-samples them too
    again = Orchestrator(c, QueueSink(GroupQueue(redis_url, redis_prefix)))
    again._resume(prompts)
    again._sync_outstanding(prompts)
    assert list(again._redo) == slots[2:] and again.progress is not None and again.progress.next_seq == 4
