"""`sgpo judge` row handling: every bad row is an error naming its line and field (the CLI runs in e2e tests)."""

from __future__ import annotations

import pytest

from sgpo.core import compute_colored_reward, judgement_rts
from sgpo.judge.batch import RowError, judge_row, parse_row
from sgpo.judge.config import JudgeConfig
from sgpo.judge.judge import build_judge
from sgpo.judge.types import JudgeItem


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 7: not valid JSON"),
        ("[1, 2]", "line 7: must be a JSON object"),
        ('{"steps": ["a"]}', "line 7: field `problem` must be a string"),
        ('{"problem": "p"}', "line 7: give exactly one of `steps`"),
        ('{"problem": "p", "steps": ["a"], "response": "a"}', "line 7: give exactly one of `steps`"),
        ('{"problem": "p", "steps": "a"}', "line 7: field `steps` must be a list of strings"),
        ('{"problem": "p", "response": 3}', "line 7: field `response` must be a string"),
        (
            '{"problem": "p", "response": "a", "reference_solution": 1}',
            "`reference_solution` must be a string",
        ),
        (
            '{"problem": "p", "response": "a", "token_char_starts": [true]}',
            "`token_char_starts` must be a list",
        ),
    ],
)
def test_malformed_rows(line: str, message: str) -> None:
    with pytest.raises(RowError) as e:
        parse_row(line, 7)
    assert message in str(e.value)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"problem": "p", "steps": ["a", "  "]}, "line 3: steps[1]: is empty"),
        ({"problem": "p", "response": "abc", "token_char_starts": [0, 9]}, "line 3: token_char_starts[1]"),
    ],
)
def test_rows_the_judge_rejects(row: dict[str, object], message: str) -> None:
    with pytest.raises(RowError) as e:
        judge_row(build_judge(JudgeConfig()), 3, row)
    assert message in str(e.value)


def test_a_row_comes_back_with_its_judgement() -> None:
    row = {"problem": "p", "steps": ["2 + 2 = 4", "4 * 3 = 13"], "id": 5}
    out = judge_row(build_judge(JudgeConfig()), 1, row)
    assert out["id"] == 5 and out["first_error_step"] == 1 and out["judge_status"] == "ok"
    assert out["rts"] == pytest.approx(len("2 + 2 = 4") / len("2 + 2 = 44 * 3 = 13"))


def test_an_empty_response_is_judged_wrong_from_the_start() -> None:
    judge = build_judge(JudgeConfig())
    [j] = judge.judge("Start with 7. Add 5.", "Step 1: 7 + 5 = 12\nAnswer: 12", [JudgeItem(response=" \n")])
    assert (j.status, j.steps, j.first_error_step, j.step_lengths) == ("ok", (), 0, ())
    assert judgement_rts(j, "tokens") == 0.0 and 0.0 < compute_colored_reward(0.0) < 0.5
    out = judge_row(judge, 1, {"problem": "p", "response": " \n"})
    assert out["rts"] == 0.0 and out["reward"] == compute_colored_reward(0.0)
