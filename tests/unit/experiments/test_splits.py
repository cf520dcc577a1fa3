"""The held-out splits of an RL run: test unchanged, validation drawn apart from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgpo.launch.presets import TRAIN_PRESETS
from sgpo.launch.train import write_datasets
from sgpo.tasks.arith import generate_split
from sgpo.tasks.tiny import TINY_PRESET, check_disjoint, heldout_splits


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("seed", [0, 3])
def test_validation_is_disjoint_from_test_by_problem_text(seed: int) -> None:
    splits = heldout_splits(seed, 100)
    test, val = splits["test"], splits["validation"]
    assert not {p.problem for p in test} & {p.problem for p in val}
    by_level = {lv: sum(p.steps == lv for p in val) for lv in TINY_PRESET.eval_steps}
    assert by_level[1] == 126 - 100  # 1 step: the problem space holds 126; validation gets the rest
    assert all(by_level[lv] == 100 for lv in TINY_PRESET.eval_steps if lv >= 3)
    # its own stream, not the test stream with some problems dropped
    assert [p.unique_id.split("/")[1] for p in val] == ["rl-validation"] * len(val)


def test_check_disjoint_names_a_shared_problem() -> None:
    a = generate_split("x", (3,), 5, seed=0)
    with pytest.raises(ValueError, match="share 1 problems"):
        check_disjoint({"a": a, "b": a[2:3]})


def test_test_split_and_train_prompts_are_unchanged(tmp_path: Path) -> None:
    """`--eval-split test` (the default) writes exactly what every earlier run wrote."""
    preset = TRAIN_PRESETS["tiny"]
    write_datasets(tmp_path, 1, preset)
    old_eval = generate_split("rl-eval", TINY_PRESET.eval_steps, preset.eval_per_level, 1, TINY_PRESET.task)
    old_train = generate_split(
        "rl-train",
        TINY_PRESET.rl_steps,
        preset.train_per_level,
        1,
        TINY_PRESET.task,
        exclude=[p.problem for p in old_eval],
    )
    assert [r["problem"] for r in _rows(tmp_path / "eval_problems.jsonl")] == [p.problem for p in old_eval]
    assert [r["problem"] for r in _rows(tmp_path / "train_problems.jsonl")] == [p.problem for p in old_train]


def test_validation_run_trains_on_neither_split(tmp_path: Path) -> None:
    preset = TRAIN_PRESETS["tiny"]
    write_datasets(tmp_path, 2, preset, eval_split="validation")
    splits = heldout_splits(2, preset.eval_per_level)
    evaluated = [r["problem"] for r in _rows(tmp_path / "eval_problems.jsonl")]
    assert evaluated == [p.problem for p in splits["validation"]]
    train = {r["problem"] for r in _rows(tmp_path / "train_problems.jsonl")}
    assert not train & {p.problem for p in splits["test"]} and not train & set(evaluated)
    with pytest.raises(ValueError, match="not one of"):
        write_datasets(tmp_path, 2, preset, eval_split="dev")
