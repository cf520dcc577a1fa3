"""Checkpoint and published-weight folders: only complete folders count, crashes leave no half-state."""

from __future__ import annotations

from pathlib import Path

from sgpo.trainer.checkpoint import (
    STATE_FILE,
    TrainerState,
    clean_temp,
    latest_checkpoint,
    list_checkpoints,
    list_published,
    load_state,
    prune,
    publish_weights,
    save_checkpoint,
)


def _write_model(d: Path) -> None:
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"weights")


def _save(run_dir: Path, step: int, tok: Path | None = None) -> Path:
    return save_checkpoint(
        run_dir,
        TrainerState(step=step, policy_version=step, consumed=[[f"g{i}"] for i in range(step)]),
        write_model=_write_model,
        optim_state={"state": {}, "param_groups": []},
        rng_state={"seed": 1},
        tokenizer_from=tok,
    )


def test_save_load_and_latest(tmp_path: Path) -> None:
    tok = tmp_path / "model"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    (tok / "model.safetensors").write_text("not copied")
    for step in (2, 10, 4):
        _save(tmp_path, step, tok)
    latest = latest_checkpoint(tmp_path)
    assert latest == tmp_path / "checkpoints" / "step-10"  # numeric order, not lexical
    state = load_state(latest)
    assert (state.step, state.policy_version, len(state.consumed)) == (10, 10, 10)
    assert state.consumed_ids() == {f"g{i}" for i in range(10)}
    assert (latest / "tokenizer.json").is_file() and (latest / "model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in latest.iterdir()) == [
        "config.json",
        "model.safetensors",
        "optimizer.pt",
        "rng.pt",
        "tokenizer.json",
        STATE_FILE,
    ]


def test_temp_and_half_deleted_folders_never_count_and_are_cleaned(tmp_path: Path) -> None:
    _save(tmp_path, 2)
    root = tmp_path / "checkpoints"
    (root / ".tmp-step-4-999").mkdir()  # a crash mid-write
    (root / ".tmp-step-4-999" / STATE_FILE).write_text('{"step": 4, "consumed": []}')
    (root / ".del-step-0-1-2").mkdir()  # a crash mid-delete
    (root / "step-6").mkdir()  # not written by us: no state file
    assert latest_checkpoint(tmp_path) == root / "step-2"
    clean_temp(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step-2", "step-6"]


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        _save(tmp_path, step)
    prune(list_checkpoints(tmp_path), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4]
    assert not any(p.name.startswith(".del-") for p in (tmp_path / "checkpoints").iterdir())


def test_publish_replaces_a_version_and_rolls_back_newer_ones(tmp_path: Path) -> None:
    for v in (1, 2, 3, 4):
        publish_weights(tmp_path, v, write_model=_write_model, tokenizer_from=None, keep=3)
    assert [v for v, _ in list_published(tmp_path)] == [2, 3, 4]
    # A resume from the step-2 checkpoint republishes v2: v3 and v4 belong to a trajectory that was lost.
    folder = publish_weights(
        tmp_path,
        2,
        write_model=lambda d: (d / "config.json").write_text('{"new": 1}'),
        tokenizer_from=None,
        keep=3,
    )
    assert [v for v, _ in list_published(tmp_path)] == [2]
    assert (folder / "config.json").read_text() == '{"new": 1}'
