"""Checkpoints and published weights on disk, written atomically: a temp folder, fsync, then rename.

{run_dir}/checkpoints/step-N/   an HF model folder (config, model.safetensors, tokenizer files) plus
                                optimizer.pt (AdamW, parameter-name keys), rng.pt and trainer_state.json
                                (step, and the ids of every group trained so far, per step, in order)
{run_dir}/weights/vN/           an HF model folder published for the generator (N = the step it follows)

A folder named step-N or vN is complete: it only ever appears by rename. Deleting goes the other way
(rename to a dot-folder, then remove), so a crash never leaves a half-deleted folder under a live name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgpo.trainer.faults import failpoint

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_VERSION_DIR = re.compile(r"^v(\d+)$")
# Tokenizer files copied from the initial model folder into every checkpoint and published folder.
_TOKENIZER_FILES = re.compile(
    r"^(tokenizer.*|special_tokens_map\.json|added_tokens\.json|vocab\..*|merges\.txt|chat_template\..*|.*\.tiktoken|spiece\.model)$"
)


@dataclass
class TrainerState:
    step: int = 0
    policy_version: int = 0
    consumed: list[list[str]] = field(default_factory=list)
    """Group ids trained in each step, in order: their effect (and only theirs) is in this checkpoint."""
    created_unix: float = 0.0

    def consumed_ids(self) -> set[str]:
        return {g for ids in self.consumed for g in ids}


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Rename `path` out of the way (atomic), then delete it."""
    if not path.exists():
        return
    trash = path.with_name(f".del-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


FILE_MODE = 0o640
"""Checkpoints, published weights and metrics: the owner and its group (the generator of a deployment reads
the weights), never other users."""
PRIVATE_MODE = 0o600
"""The optimizer and RNG state: the trainer's alone."""
DIR_MODE = 0o750


def _restrict(root: Path) -> None:
    """No file under `root` readable by others (optimizer and RNG state by the owner alone)."""
    os.chmod(root, DIR_MODE)
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), DIR_MODE)
        for name in files:
            mode = PRIVATE_MODE if name in (OPTIMIZER_FILE, RNG_FILE) else FILE_MODE
            os.chmod(os.path.join(dirpath, name), mode)


def append_line(path: Path, line: str) -> None:
    """Append one line to `path`, created with FILE_MODE (metrics.jsonl: not readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    with os.fdopen(fd, "a") as f:
        f.write(line + "\n")


def _install(tmp: Path, final: Path) -> None:
    """Make `tmp` (complete, fsynced) visible as `final`, replacing any folder of that name."""
    _restrict(tmp)
    _fsync_tree(tmp)
    _remove(final)
    os.rename(tmp, final)
    _fsync_dir(final.parent)


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    for p in src.iterdir():
        if p.is_file() and _TOKENIZER_FILES.match(p.name):
            shutil.copy2(p, dst / p.name)


def clean_temp(run_dir: Path) -> None:
    """Remove temp and half-deleted folders a crash left behind."""
    for sub in ("checkpoints", "weights"):
        d = run_dir / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.name.startswith((".tmp-", ".del-")):
                    shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    run_dir: Path,
    state: TrainerState,
    *,
    write_model: Callable[[Path], None],
    optim_state: dict[str, Any],
    rng_state: dict[str, Any],
    tokenizer_from: Path | None,
) -> Path:
    import torch

    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-step-{state.step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp)
    if tokenizer_from is not None:
        copy_tokenizer_files(tokenizer_from, tmp)
    torch.save(optim_state, tmp / OPTIMIZER_FILE)
    torch.save(rng_state, tmp / RNG_FILE)
    state.created_unix = time.time()
    (tmp / STATE_FILE).write_text(
        json.dumps(
            {
                "step": state.step,
                "policy_version": state.policy_version,
                "created_unix": state.created_unix,
                "consumed": state.consumed,
            }
        )
    )
    failpoint("checkpoint.written")
    final = root / f"step-{state.step}"
    _install(tmp, final)
    return final


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def load_state(ckpt: Path) -> TrainerState:
    d = json.loads((ckpt / STATE_FILE).read_text())
    return TrainerState(
        step=int(d["step"]),
        policy_version=int(d.get("policy_version", 0)),
        consumed=[list(ids) for ids in d["consumed"]],
        created_unix=float(d.get("created_unix", 0.0)),
    )


def load_torch(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


BEST_LINK = "best"
"""checkpoints/best: a symlink to the step folder with the best held-out accuracy (`sgpo train` writes it)."""


def prune(paths: Iterable[tuple[int, Path]], keep: int, keep_every: int = 0) -> None:
    """Delete all but the newest `keep` folders, except those of steps that are multiples of `keep_every`
    (0: none) and the one `best` points to."""
    items = sorted(paths)
    protected = {p for n, p in items if keep_every and n % keep_every == 0}
    if items and (items[0][1].parent / BEST_LINK).is_symlink():
        protected.add(items[0][1].parent / os.readlink(items[0][1].parent / BEST_LINK))
    for _, p in items[: max(len(items) - keep, 0)]:
        if p not in protected:
            _remove(p)


def list_published(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "weights"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _VERSION_DIR.match(p.name)
        if m and (p / "config.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def publish_weights(
    run_dir: Path,
    version: int,
    *,
    write_model: Callable[[Path], None],
    tokenizer_from: Path | None,
    keep: int,
) -> Path:
    """Write weights/v{version}/ atomically (replacing a folder of that name) and drop old versions."""
    root = run_dir / "weights"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-v{version}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write_model(tmp)
    if tokenizer_from is not None:
        copy_tokenizer_files(tokenizer_from, tmp)
    final = root / f"v{version}"
    _install(tmp, final)
    failpoint("publish.written")
    # Versions newer than this one belong to a trajectory a resume rolled back: drop them too.
    published = list_published(run_dir)
    for v, p in published:
        if v > version:
            _remove(p)
    prune([(v, p) for v, p in published if v <= version], keep)
    return final
