"""Prompt datasets and recorded-group files: bad input is a clear error naming where."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgpo.core import InvalidInputError
from sgpo.orchestrator.dataset import iterate_epochs, load_prompts
from sgpo.orchestrator.offline import GroupWriter, read_groups
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
