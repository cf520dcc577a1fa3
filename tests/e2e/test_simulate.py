"""`sgpo simulate` through the real CLI: SGPO needs fewer updates than GRPO in the stylized model (K = 2)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import sgpo_cmd


@pytest.mark.e2e
def test_simulate_sgpo_beats_grpo_for_k2(tmp_path: Path) -> None:
    out = subprocess.run(
        sgpo_cmd("simulate", "--k", "2", "--seeds", "4", "--out", str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "GRPO/SGPO" in out.stdout
    results = json.loads((tmp_path / "simulate.json").read_text())["results"]
    at_90 = next(r for r in results if r["k"] == 2 and r["target"] == 0.9)
    assert not at_90["grpo_censored"] and not at_90["sgpo_censored"]
    assert at_90["sgpo_updates"] < at_90["grpo_updates"]
    assert (tmp_path / "simulate.png").stat().st_size > 10_000


def test_simulate_rejects_group_of_one(tmp_path: Path) -> None:
    out = subprocess.run(
        sgpo_cmd("simulate", "--group-size", "1", "--out", str(tmp_path)), capture_output=True, text=True
    )
    assert out.returncode != 0
    assert "at least 2 responses per group; got --group-size 1" in out.stderr
