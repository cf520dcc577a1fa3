"""`sgpo runs compare`: two hand-made run folders side by side, through the library and the real CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sgpo.experiments.compare import CompareError, compare
from tests.support import sgpo_cmd
from tests.unit.launch.runs import B, G, write_run


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    a = write_run(
        tmp_path / "sgpo-s0", "sgpo", 0, [(0, 0.25), (2, 0.30), (4, 0.35)],
        levels={"3": [0.5, 0.55, 0.6], "4": [0.2, 0.25, 0.3]}, all_negative=0.5,
    )  # fmt: skip
    b = write_run(
        tmp_path / "grpo-s0", "grpo", 0, [(0, 0.25), (2, 0.28), (4, 0.26)],
        levels={"3": [0.5, 0.5, 0.5], "4": [0.2, 0.2, 0.1]}, all_negative=0.75,
    )  # fmt: skip
    lines = [json.loads(x) for x in (a / "metrics.jsonl").read_text().splitlines()]
    (a / "metrics.jsonl").write_text("".join(json.dumps({**m, "frac_colored": 0.25}) + "\n" for m in lines))
    return [a, b]


def test_table_puts_the_runs_side_by_side(two_runs: list[Path], tmp_path: Path) -> None:
    tables, pngs, runs = compare(two_runs, tmp_path / "plots")
    summary, by_level = tables
    rows = {r[0]: dict(zip(summary.headers, r, strict=True)) for r in summary.rows}
    assert set(rows) == {"sgpo-s0", "grpo-s0"}
    s, g = rows["sgpo-s0"], rows["grpo-s0"]
    assert (s["algo"], s["steps"], s["sampled"]) == ("sgpo", "4", str(4 * B * G))
    assert (s["held-out first"], s["held-out last"], s["change"]) == ("0.250", "0.350", "+0.100")
    assert g["best @ step"] == "0.280 @ 2" and g["change"] == "+0.010"
    assert (s["all-negative"], s["colored"]) == ("0.50", "0.25")
    assert (g["all-negative"], g["colored"]) == ("0.75", "—")  # no frac_colored in its metrics
    assert by_level.headers == ["steps", "sgpo-s0", "grpo-s0"]
    assert by_level.rows == [["3", "0.600", "0.500"], ["4", "0.300", "0.100"]]
    assert [p.name for p in pngs] == ["compare_accuracy.png", "compare_groups.png"]
    assert all(p.stat().st_size > 5000 for p in pngs)
    assert [r.data.curve("sampled")[-1] for r in runs] == [(4 * B * G, 0.35), (4 * B * G, 0.26)]


def test_not_a_run_folder_is_a_clear_error(two_runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(CompareError, match=r"no run\.toml"):
        compare([two_runs[0], tmp_path], None)


@pytest.mark.e2e
def test_cli_prints_the_table_and_writes_the_plots(two_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = subprocess.run(
        sgpo_cmd("runs", "compare", *map(str, two_runs), "--out", str(out), "--markdown"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| sgpo-s0 | sgpo | 0 | 4 | 32 | 0.250 | 0.350 | +0.100 |" in proc.stdout
    assert (out / "compare_accuracy.png").is_file() and (out / "compare_groups.png").is_file()
    bad = subprocess.run(
        sgpo_cmd("runs", "compare", str(tmp_path / "nowhere")), capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "not a run folder" in bad.stderr
