"""checkpoints/best: a relative symlink to the best evaluated step's checkpoint, replaced atomically."""

from __future__ import annotations

import json
from pathlib import Path

from sgpo.launch.train import point_best


def test_point_best_replaces_the_link_and_records_the_accuracy(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (10, 20):
        (root / f"step-{step}").mkdir(parents=True)
    point_best(tmp_path, 10, {"step": 10, "overall": 0.3, "accuracy": {"3": 0.5}})
    link = point_best(tmp_path, 20, {"step": 20, "overall": 0.35, "accuracy": {"3": 0.6}, "n": 800})
    assert link.is_symlink() and link.readlink() == Path("step-20")
    assert link.resolve() == (root / "step-20").resolve()
    record = json.loads((root / "best.json").read_text())
    assert record == {"step": 20, "overall": 0.35, "accuracy": {"3": 0.6}, "checkpoint": "step-20"}
    assert sorted(p.name for p in root.iterdir()) == ["best", "best.json", "step-10", "step-20"]
