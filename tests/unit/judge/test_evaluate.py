"""ProcessBench scoring: the metric itself, data validation, and the symbolic backend on a real slice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgpo.judge.evaluate import DataError, compute_processbench_scores, load_processbench
from tests.support import SHARED_DATA


def test_scores_follow_processbench() -> None:
    labels = [2, 0, -1, -1, 1]
    preds = [2, None, -1, 0, 3]  # exact, unparseable, correct -1, false alarm, late
    s = compute_processbench_scores(labels, preds)
    assert (s["n_erroneous"], s["n_correct"], s["failed"]) == (3, 2, 1)
    assert s["error_acc"] == pytest.approx(1 / 3)
    assert s["correct_acc"] == pytest.approx(1 / 2)
    assert s["f1"] == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert (s["early"], s["late"], s["missed"]) == (0, 1, 0)
    assert compute_processbench_scores([0, -1], [None, None])["f1"] == 0.0
    with pytest.raises(ValueError, match="one prediction per label"):
        compute_processbench_scores([0], [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{}", "JSON array"),
        ("[1]", "item 0 must be an object"),
        (
            '[{"id": "a", "problem": "p", "steps": [], "label": -1}]',
            r"item 0 \(a\): `steps` must be a non-empty",
        ),
        (
            '[{"problem": "p", "steps": ["s"], "label": 3}]',
            r"`label` must be -1 or a step index in \[0, 0\]; got 3",
        ),
        ("[", "is not JSON"),
    ],
)
def test_bad_data_names_the_item(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "pb.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_processbench(path)
    with pytest.raises(DataError, match="does not exist"):
        load_processbench(tmp_path / "missing.json")


def test_real_splits_load() -> None:
    gsm8k = load_processbench(SHARED_DATA / "processbench" / "gsm8k.json")
    math = load_processbench(SHARED_DATA / "processbench" / "math.json")
    assert (len(gsm8k), len(math)) == (400, 1000)
    assert json.dumps(gsm8k[0])  # plain JSON records
