"""Checkpoints worth keeping: every keep_every-th step's and the best one survive pruning."""

from __future__ import annotations

import os
from pathlib import Path

from sgpo.trainer.checkpoint import BEST_LINK, TrainerState, list_checkpoints, prune, save_checkpoint


def _save(run_dir: Path, step: int) -> Path:
    return save_checkpoint(
        run_dir,
        TrainerState(step=step, policy_version=step, consumed=[]),
        write_model=lambda d: (d / "config.json").write_text("{}"),
        optim_state={"state": {}, "param_groups": []},
        rng_state={"seed": 1},
        tokenizer_from=None,
    )


def test_keep_every_protects_multiples(tmp_path: Path) -> None:
    for step in range(1, 11):
        _save(tmp_path, step)
        prune(list_checkpoints(tmp_path), keep=2, keep_every=4)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 8, 9, 10]


def test_the_best_pointer_protects_its_checkpoint(tmp_path: Path) -> None:
    for step in (1, 2, 3):
        _save(tmp_path, step)
    root = tmp_path / "checkpoints"
    os.symlink("step-2", root / BEST_LINK)
    for step in (4, 5, 6):
        _save(tmp_path, step)
        prune(list_checkpoints(tmp_path), keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 5, 6]
    assert (root / BEST_LINK).resolve() == (root / "step-2").resolve()
