"""`sgpo verify FILE.jsonl` / `-`: rows come back with status, extracted and reason; bad input is a clear
error naming the line and the field, with exit code 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import sgpo_cmd

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def run_cli(*args: str, stdin: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sgpo_cmd("verify", *args), input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_file_in_jsonl_out_with_symbolic_rows(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "gold": "36", "pred": "Step 1: 4*9=36\nAnswer: 36"},
        {"id": "b", "gold": 25, "pred": "The answer is $\\boxed{025}$."},
        {"id": "c", "gold": "x^2+2x+1", "pred": "so \\boxed{(x+1)^2}", "meta": {"k": [1, 2]}},
        {"id": "d", "gold": "0.6054", "pred": "0.6055", "tolerance": 1e-4},
        {"id": "e", "gold": "C", "pred": "The answer is (B)."},
        {"id": "f", "gold": "36", "pred": ""},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = tmp_path / "out.jsonl"
    proc = run_cli(str(src), "-o", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r["status"]) for r in got] == [
        ("a", "correct"),
        ("b", "correct"),
        ("c", "correct"),
        ("d", "correct"),
        ("e", "wrong"),
        ("f", "wrong"),
    ]
    assert got[1]["gold"] == 25  # the row is written back as given, plus the three fields
    assert got[2]["meta"] == {"k": [1, 2]} and got[2]["extracted"] == "(x+1)^2"
    assert got[5]["reason"] == "response is empty"
    assert "verified 6 rows" in proc.stderr and "correct 4, wrong 2, unscorable 0" in proc.stderr


def test_stdin_to_stdout_with_fallback_choice() -> None:
    stdin = (
        json.dumps({"gold": "12", "pred": "I counted 12 apples and then 3 more pears in the bag here."})
        + "\n"
    )
    proc = run_cli("-", "--no-progress", "--fallback", "none", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    [row] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert row["status"] == "wrong" and "no answer found" in row["reason"]  # the response's failure
    proc = run_cli("-", "--no-progress", "--fallback", "last_number", stdin=stdin)
    [row] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert (row["status"], row["extracted"]) == ("wrong", "3")


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ('{"gold": "1", "pred": "1"}\n{"gold": "2"}\n', "<stdin>:2: field 'pred' is missing"),
        ('{"gold": "1", "pred": "1"}\nnot json\n', "<stdin>:2: not valid JSON"),
        ('["1", "1"]\n', "<stdin>:1: each line must be a JSON object"),
        ('{"gold": ["1"], "pred": "1"}\n', "<stdin>:1: field 'gold' must be a string; got list"),
        (
            '{"gold": "1", "pred": "1", "tolerance": -2}\n',
            "<stdin>:1: 'tolerance' must be a non-negative number",
        ),
    ],
)
def test_bad_rows_are_rejected_before_any_output(stdin: str, message: str) -> None:
    proc = run_cli("-", "--no-progress", stdin=stdin)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    proc = run_cli(str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = run_cli("-", "--workers", "0", stdin="")
    assert proc.returncode == 2 and "workers" in proc.stderr
    proc = run_cli("-", "--batch-size", "0", stdin="")
    assert proc.returncode == 2 and "--batch-size" in proc.stderr
