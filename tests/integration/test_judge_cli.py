"""`sgpo judge` and `sgpo eval-judge` run as users run them (subprocesses of the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sgpo.core import compute_colored_reward
from tests.integration.test_judge_llm import ScriptedLLM
from tests.support import SHARED_DATA, sgpo_cmd

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REFERENCE = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nAnswer: 36"
ROWS = [
    {"problem": "Start with 7. Add 5. Multiply by 3.", "reference_solution": REFERENCE,
     "response": "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nAnswer: 35", "id": "a"},
    {"problem": "q", "steps": ["We think.", "Nothing to compute here."], "id": "b"},
    {"problem": "q", "response": "1 + 1 = 2\n2 * 2 = 5", "token_char_starts": [0, 2, 4, 6, 8, 10, 12, 14, 16, 18], "id": "c"},
]  # fmt: skip


def sgpo(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        sgpo_cmd(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_judge_file_writes_rows_back_with_judgements(tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    out = tmp_path / "out.jsonl"
    r = sgpo("judge", str(src), "--backend", "symbolic", "-o", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "judged 3 rows (0 failed)" in r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == ["a", "b", "c"]  # order and extra fields kept
    assert [x["first_error_step"] for x in rows] == [1, -1, 1]
    assert rows[0]["steps"] == REFERENCE.replace("36", "35").splitlines()
    for x in rows:
        assert x["judge_status"] == "ok" and x["judge_backend"] == "symbolic"
        assert x["reward"] == pytest.approx(compute_colored_reward(x["rts"]))
    assert rows[1]["rts"] == pytest.approx(len("We think.") / len("We think.Nothing to compute here."))
    assert rows[2]["rts"] == pytest.approx(5 / 10)  # tokens: 5 of 10 start in the first line


def test_judge_stdin_and_steps_unit() -> None:
    r = sgpo("judge", "-", "--rts-unit", "steps", "--no-progress", stdin=json.dumps(ROWS[0]) + "\n")
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (row["first_error_step"], row["rts"]) == (1, pytest.approx(1 / 3))


def test_a_bad_row_stops_the_run_with_its_line_and_field(tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps(ROWS[1]) + "\n" + '{"problem": "p", "steps": ["a", "  "]}' + "\n")
    r = sgpo("judge", str(src), "--no-progress")
    assert r.returncode == 2 and "line 2: steps[1]: is empty" in r.stderr, r.stderr


def test_bad_invocations(tmp_path: Path) -> None:
    r = sgpo("judge", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = sgpo("judge", "-", "--backend", "prm", stdin="")
    assert r.returncode == 2 and "--backend prm needs a model" in r.stderr
    r = sgpo("eval-judge", "--data", str(tmp_path / "nope.json"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_eval_judge_on_processbench(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    data = SHARED_DATA / "processbench" / "gsm8k.json"
    r = sgpo("eval-judge", "--data", str(data), "--backend", "symbolic", "-o", str(out))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result == json.loads(out.read_text())
    assert (result["split"], result["backend"], result["n"]) == ("gsm8k", "symbolic", 400)
    assert (result["n_erroneous"], result["n_correct"]) == (207, 193)
    # Arithmetic is a minority of ProcessBench's errors: high accuracy on correct items, low on erroneous ones.
    assert result["correct_acc"] >= 0.99 and 0.03 < result["error_acc"] < 0.3
    assert result["f1"] == pytest.approx(
        2 * result["error_acc"] * result["correct_acc"] / (result["error_acc"] + result["correct_acc"])
    )
    assert "published F1: Qwen2.5-7B-Instruct 36.5" in r.stderr


def test_eval_judge_cascade_reports_saved_llm_calls() -> None:
    llm = ScriptedLLM()  # answers \boxed{0} to everything: the score is meaningless, the call count is not
    try:
        env = {
            "SGPO_JUDGE__BACKEND__TYPE": "cascade",
            "SGPO_JUDGE__BACKEND__LLM__BASE_URL": llm.url,
            "SGPO_JUDGE__BACKEND__LLM__MAX_CONCURRENCY": "4",
        }
        data = SHARED_DATA / "processbench" / "gsm8k.json"
        r = sgpo(
            "eval-judge",
            "--data",
            str(data),
            "--backend",
            "cascade",
            "--limit",
            "120",
            "--no-progress",
            env=env,
        )
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        stats = result["backend_stats"]
        assert stats["cascade_judged"] == 120
        saved = stats["cascade_llm_calls_saved"]
        assert 0 < saved < 120 and stats["llm_asked"] == 120 - saved == llm.count("ok:0")
        assert result["cascade_llm_calls_saved_rate"] == pytest.approx(saved / 120)
    finally:
        llm.close()
