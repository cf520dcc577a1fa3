"""`sgpo data --input`: converters on the real files in ../shared/data, drop reports, bad files, and the
orchestrator's loader reading what they write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sgpo.cli import main
from sgpo.orchestrator.dataset import load_prompts
from sgpo.tasks.datasets import ColumnMap, DataError, convert_dataset, last_box
from tests.support import SHARED_DATA

MATH_TRAIN = SHARED_DATA / "math" / "train_prm800k_part.jsonl"
MATH500 = SHARED_DATA / "prm800k" / "math500_test.jsonl"
GSM8K_TRAIN = SHARED_DATA / "gsm8k" / "train.jsonl"


def _rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def test_math_train_split_keeps_every_row_with_its_answer_and_level(tmp_path: Path) -> None:
    out = tmp_path / "math.jsonl"
    report = convert_dataset(MATH_TRAIN, out, exclude=[MATH500])
    assert (report.format, report.read, report.written, dict(report.dropped)) == ("math", 3682, 3682, {})
    rows = _rows(out)
    assert rows[0] == {
        "problem": rows[0]["problem"],
        "answer": "16",
        "solution": rows[0]["solution"],
        "id": "test/prealgebra/947.json",
        "level": "2",
    }
    levels = {lv: sum(r.get("level") == lv for r in rows) for lv in ("1", "2", "3", "4", "5")}
    # the README's levels 1-5; two rows say "Level ?" and keep no level
    assert levels == {"1": 267, "2": 710, "3": 746, "4": 822, "5": 1135}
    assert sum("level" not in r for r in rows) == 2
    prompts = load_prompts(out)  # the orchestrator reads what the converter writes
    assert len(prompts) == 3682
    assert (prompts[0].prompt_id, prompts[0].answer) == ("test/prealgebra/947.json", "16")


def test_math_answers_from_the_last_box_agree_with_prm800ks_answers(tmp_path: Path) -> None:
    """MATH's own release has no answer field: the answer is the solution's last box. On PRM800K's copy, which
    has both, the two agree on all 3,682 rows (joining the boxes before the last one would not: 8 differ)."""
    convert_dataset(MATH_TRAIN, tmp_path / "given.jsonl")  # answers from the answer field (spaces, $ dropped)
    given = [r["answer"] for r in _rows(tmp_path / "given.jsonl")]
    assert sum(a.strip() != a for a in (r["answer"] for r in _rows(MATH_TRAIN))) > 0  # " 17" in the file
    no_answer = tmp_path / "math_no_answer.jsonl"
    no_answer.write_text(
        "".join(json.dumps({k: v for k, v in r.items() if k != "answer"}) + "\n" for r in _rows(MATH_TRAIN))
    )
    out = tmp_path / "math.jsonl"
    report = convert_dataset(no_answer, out, fmt="math")
    assert report.written == 3682 and report.answers == {"last \\boxed{}": 3682}
    assert [r["answer"] for r in _rows(out)] == given


def test_math_rows_without_a_boxed_answer_are_reported_not_guessed(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in _rows(MATH_TRAIN)[:10]]
    for r in rows[3:6]:  # the box removed, its content left as plain text (a guesser would take the number)
        r["solution"] = r["solution"].replace("\\boxed", "")
    src = tmp_path / "math.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out.jsonl"
    report = convert_dataset(src, out)
    reason = "no answer (no answer column value and no \\boxed{} in the solution)"
    assert report.written == 7 and dict(report.dropped) == {reason: 3}
    assert report.examples[reason] == [f"{src}:4", f"{src}:5", f"{src}:6"]
    assert f"dropped 3: {reason}" in report.summary()
    assert [r["problem"] for r in _rows(out)] == [
        r["problem"] for i, r in enumerate(rows) if i not in (3, 4, 5)
    ]


def test_gsm8k_train_answers_come_from_the_hash_line(tmp_path: Path) -> None:
    out = tmp_path / "gsm8k.jsonl"
    report = convert_dataset(GSM8K_TRAIN, out)
    assert (report.format, report.read, report.written) == ("gsm8k", 7473, 7473)
    assert report.answers == {"#### line": 7473}
    first = _rows(out)[0]
    assert first["answer"] == "72"
    # the reference solution without the calculator notes and the answer line
    assert first["solution"] == (
        "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."
    )
    answers = [r["answer"] for r in _rows(out)]
    assert all("," not in a and a.lstrip("-").replace(".", "").isdigit() for a in answers)
    assert len(load_prompts(out)) == 7473


def test_duplicates_and_excluded_problems_are_dropped_and_counted(tmp_path: Path) -> None:
    math500 = _rows(MATH500)
    src = tmp_path / "mixed.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [*math500[:3], math500[0], *_rows(MATH_TRAIN)[:5]]))
    report = convert_dataset(src, tmp_path / "out.jsonl", exclude=[MATH500])
    assert report.written == 5
    assert dict(report.dropped) == {"problem in an --exclude file": 4}
    report = convert_dataset(src, tmp_path / "out.jsonl")
    assert report.written == 8 and dict(report.dropped) == {"duplicate problem": 1}
    with pytest.raises(DataError, match=r"no row of .* could be converted"):
        convert_dataset(MATH500, tmp_path / "none.jsonl", exclude=[MATH500])
    assert not (tmp_path / "none.jsonl").exists()


def test_parquet_and_a_saved_datasets_folder_with_a_column_mapping(tmp_path: Path) -> None:
    import datasets

    rows = [
        {
            "question": r["problem"],
            "final": r["answer"],
            "difficulty": int(r["level"]),  # MATH-500 levels are integers
            "uid": r["unique_id"],
        }
        for r in _rows(MATH500)[:20]
    ]
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "t.parquet"))
    datasets.DatasetDict({"train": table, "test": table.select(range(5))}).save_to_disk(str(tmp_path / "dd"))
    cols = ColumnMap(problem="question", answer="final", solution=None, id="uid", level="difficulty")
    for src, split, n in ((tmp_path / "t.parquet", None, 20), (tmp_path / "dd", "test", 5)):
        out = tmp_path / "out.jsonl"
        report = convert_dataset(src, out, fmt="columns", columns=cols, split=split)
        assert report.written == n
        got = _rows(out)
        assert got[0] == {
            "problem": rows[0]["question"],
            "answer": rows[0]["final"],
            "solution": "",
            "id": rows[0]["uid"],
            "level": str(rows[0]["difficulty"]),
        }
    with pytest.raises(DataError, match=r"holds the splits \['test', 'train'\]; choose one with --split"):
        convert_dataset(tmp_path / "dd", tmp_path / "o.jsonl", fmt="columns", columns=cols)


def test_bad_files_name_the_row(tmp_path: Path) -> None:
    good = json.dumps(_rows(MATH_TRAIN)[0])
    broken = tmp_path / "broken.jsonl"
    broken.write_text(f"{good}\n{good[:40]}\n")
    with pytest.raises(DataError, match=rf"{broken}:2 is not JSON"):
        convert_dataset(broken, tmp_path / "o.jsonl")
    listed = tmp_path / "list.jsonl"
    listed.write_text(f"{good}\n[1, 2]\n")
    with pytest.raises(DataError, match=rf"{listed}:2 is a list, not an object"):
        convert_dataset(listed, tmp_path / "o.jsonl", fmt="math")
    with pytest.raises(DataError, match=r"minerva_math_test.jsonl:1 has no column 'answer' \(it has \["):
        convert_dataset(
            SHARED_DATA / "competition" / "minerva_math_test.jsonl",
            tmp_path / "o.jsonl",
            fmt="columns",
            columns=ColumnMap(problem="problem", answer="answer"),
        )
    with pytest.raises(DataError, match=r"cannot tell the format .* pass --format"):
        convert_dataset(SHARED_DATA / "processbench" / "math.json", tmp_path / "o.jsonl")
    with pytest.raises(DataError, match=r"unknown file type '\.csv'"):
        convert_dataset(
            SHARED_DATA / "math-verify-tests" / "examples" / "model_outputs.csv", tmp_path / "o.jsonl"
        )
    with pytest.raises(DataError, match="does not exist"):
        convert_dataset(tmp_path / "missing.jsonl", tmp_path / "o.jsonl")


def test_last_box_takes_the_outermost_last_box_only() -> None:
    assert last_box("so $x=\\boxed{5}$ and $y = \\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert last_box("\\boxed{\\boxed{3}}") == "\\boxed{3}"
    assert last_box("no box: 42") is None


def test_the_cli_converts_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    minerva = SHARED_DATA / "competition" / "minerva_math_test.jsonl"
    out = tmp_path / "minerva.jsonl"
    assert main(["data", "--input", str(minerva), "--solution-col", "solution", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "read 272 rows, wrote 272" in printed and "answers from last \\boxed{}: 272" in printed
    assert main(["data", "--input", str(minerva), "--out", str(out), "--preset", "tiny"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["data", "--input", str(minerva), "--out", str(out), "--format", "columns"]) == 2
    assert main(["data", "--input", str(MATH500), "--out", str(tmp_path), "--limit", "7"]) == 0
    assert len(_rows(tmp_path / "train_problems.jsonl")) == 7
    assert main(["data", "--input", str(tmp_path / "nope.jsonl"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_tiny_preset_still_writes_its_two_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert (
        "train_problems.jsonl (8000 problems)" in printed and "eval_problems.jsonl (800 problems)" in printed
    )
