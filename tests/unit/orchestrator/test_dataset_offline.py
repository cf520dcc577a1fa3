"""Prompt datasets and recorded-group files: bad input is a clear error naming where."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sgpo.common.convert import group_to_pb
from sgpo.core import AlgoConfig, InvalidInputError, compute_colored_reward, get_algorithm
from sgpo.orchestrator.dataset import iterate_epochs, load_prompts
from sgpo.orchestrator.offline import GroupWriter, read_groups
from sgpo.orchestrator.rollout import score
from sgpo.v1 import common_pb2
from tests.unit.common.test_convert import make_group


def test_load_prompts_accepts_real_dataset_fields(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"problem": "1+1?", "answer": 2, "unique_id": "a"}\n\n{"question": "2+2?", "answer": "4"}\n'
    )
    prompts = load_prompts(path)
    assert [(p.prompt_id, p.problem, p.answer) for p in prompts] == [("a", "1+1?", "2"), ("d-3", "2+2?", "4")]


@pytest.mark.parametrize(
    ("text", "where"),
    [("not json\n", ":1 is not JSON"), ('{"problem": "x"}\n', ":1 needs"), ("", "has no rows")],
)
def test_bad_dataset_rows(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(text)
    with pytest.raises(InvalidInputError, match=where):
        load_prompts(path)


def test_epochs_shuffle_deterministically(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"problem": "p{i}", "answer": "{i}"}}\n' for i in range(20)))
    prompts = load_prompts(path)
    a = [(e, p.problem) for e, p in iterate_epochs(prompts, 2, True, seed=1)]
    b = [(e, p.problem) for e, p in iterate_epochs(prompts, 2, True, seed=1)]
    assert a == b and len(a) == 40
    first, second = [p for e, p in a if e == 0], [p for e, p in a if e == 1]
    assert sorted(first) == sorted(second) and first != second


def test_recorded_groups_round_trip_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "groups.bin"
    groups = [make_group(50), make_group(10)]
    with GroupWriter(path) as w:
        for g in groups:
            w.write(g)
    back = list(read_groups(path))
    assert [g.group_id for g in back] == [g.group_id for g in groups]
    assert back[1].completions[0].token_ids == groups[1].completions[0].token_ids
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InvalidInputError, match="truncated inside group 1"):
        list(read_groups(path))
    (tmp_path / "x.bin").write_bytes(b"nope")
    with pytest.raises(InvalidInputError, match="not a file written by `sgpo record`"):
        list(read_groups(tmp_path / "x.bin"))


def test_groups_recorded_in_format_1_still_replay(tmp_path: Path) -> None:
    """Format 1 stored each judgement's rts (no step lengths): a replay scores it exactly as recorded."""
    m = group_to_pb(make_group(5))  # verdicts: wrong, unscorable, wrong
    del m.judgements[:]
    ok = common_pb2.JUDGE_STATUS_OK
    m.judgements.extend(
        [
            common_pb2.StepJudgement(status=ok, steps=["a", "b", "c"], first_error_step=1, legacy_rts=3 / 11),
            common_pb2.StepJudgement(),
            common_pb2.StepJudgement(status=ok, steps=["a", "b"], first_error_step=-1, legacy_rts=0.625),
        ]
    )
    data = m.SerializeToString()
    path = tmp_path / "old.bin"
    path.write_bytes(b"SGPO-GROUPS 1\n" + struct.pack("<I", len(data)) + data)
    (back,) = read_groups(path)
    scored = score(back, get_algorithm(AlgoConfig()))
    assert scored.group.colored and not scored.score.uncolorable
    assert scored.group.rewards == (compute_colored_reward(3 / 11), 0.0, compute_colored_reward(0.625))
    # New files are written in format 2, with the judgements' step lengths.
    with GroupWriter(tmp_path / "new.bin") as w:
        w.write(scored.group)
    assert (tmp_path / "new.bin").read_bytes().startswith(b"SGPO-GROUPS 2\n")
    (again,) = read_groups(tmp_path / "new.bin")
    assert again.judgements == scored.group.judgements
