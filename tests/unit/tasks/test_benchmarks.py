"""Benchmark loaders of `sgpo eval` on the real files in ../shared/data, and the harness's scoring path.

The gold test: the reference solutions, fed through `score_completions` as if a model had written
them, score >= 99% on MATH-500 and GSM8K; and every file's gold answers, boxed as written in the file
("025", 27.0, "$69$,$84$"), score >= 99% against the gold the loaders normalized.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sgpo.tasks.benchmarks import (
    BENCHMARKS,
    DATA_FILES,
    BenchmarkDataError,
    BenchmarkItem,
    BenchmarkName,
    gsm8k_answer,
    integer_answer,
    load_arith,
    load_benchmark,
    number_answer,
    olympiad_answer,
    olympiad_tolerance,
    parse_benchmarks,
)
from sgpo.tasks.evaluate import score_completions
from sgpo.verifier import MathVerifier, VerifierConfig
from sgpo.verifier.extract import last_boxed
from tests.support import SHARED_DATA

SIZES = {
    "math500": 500,
    "gsm8k": 1319,
    "aime24": 30,
    "aime25": 30,
    "amc23": 40,
    "minerva": 272,
    "olympiadbench": 675,
}


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathVerifier]:
    # a long deadline: agreement is measured here, not speed (the shared 2-core machine is often busy)
    with MathVerifier(VerifierConfig(workers=2, deadline_s=60.0)) as v:
        v.wait_ready()
        yield v


def _rows(name: BenchmarkName) -> list[dict[str, object]]:
    with (SHARED_DATA / DATA_FILES[name]).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def raw_answers(name: BenchmarkName) -> list[str]:
    """Each file's gold answer exactly as the file writes it (no normalization)."""
    rows = _rows(name)
    if name == "gsm8k":
        return [str(r["answer"]).rsplit("####", 1)[1].strip() for r in rows]
    if name == "minerva":
        return [last_boxed(str(r["solution"])) or "" for r in rows]
    if name == "olympiadbench":
        return [str(r["final_answer"][0]) for r in rows]  # type: ignore[index]
    return [str(r["answer"]) for r in rows]


def _rate(verdicts: list[list[object]]) -> float:
    return sum(v[0].status == "correct" for v in verdicts) / len(verdicts)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", list(SIZES))
def test_every_file_loads_in_full(name: BenchmarkName) -> None:
    items = load_benchmark(name, SHARED_DATA)
    assert len(items) == SIZES[name]
    assert len({it.id for it in items}) == len(items), "ids are unique"
    assert all(it.problem.strip() and it.answer.strip() for it in items)
    assert load_benchmark(name, SHARED_DATA, limit=3) == items[:3]


def test_answer_formats_are_normalized() -> None:
    aime = load_benchmark("aime24", SHARED_DATA)
    assert "025" in raw_answers("aime24") and "25" in {it.answer for it in aime}
    assert all(not it.answer.startswith("0") for it in aime)
    amc = load_benchmark("amc23", SHARED_DATA)
    assert amc[0].answer == "27" and all(not it.answer.endswith(".0") for it in amc)
    math500 = load_benchmark("math500", SHARED_DATA)
    assert {it.level for it in math500} == {"1", "2", "3", "4", "5"} and math500[0].subject == "Precalculus"
    olympiad = {it.id: it for it in load_benchmark("olympiadbench", SHARED_DATA)}
    assert olympiad["olympiadbench/1664"].answer == "69,84"  # "$69$,$84$"
    assert olympiad["olympiadbench/2349"].answer == "221,8"  # "$221,$8$"
    assert olympiad["olympiadbench/1970"].answer == "(-\\infty, 0) \\cup\\{1\\}"  # "$...$."
    assert olympiad["olympiadbench/2592"].tolerance == 0.1 and olympiad["olympiadbench/2592"].unit == "%"
    assert olympiad["olympiadbench/2419"].unit == "cm^2"
    minerva = {it.id: it for it in load_benchmark("minerva", SHARED_DATA)}
    assert "$" not in minerva["minerva/72"].answer  # "x_{0} \cos (\omega t)+$ $\dot{x}_{0} ..."


def test_normalizers() -> None:
    assert integer_answer("025") == "25" and integer_answer("-007") == "-7" and integer_answer("1/2") == "1/2"
    assert number_answer(27.0) == "27" and number_answer(2.5) == "2.5" and number_answer(-1) == "-1"
    assert gsm8k_answer("so 1,000 in all.\n#### 1,000") == "1000"
    assert olympiad_answer(["$1$,$2$"]) == "1,2" and olympiad_answer(["$1$", "2"]) == "1, 2"
    assert olympiad_tolerance(None) is None and olympiad_tolerance("1e-1") == 0.1
    assert olympiad_tolerance("1e-1,1e-2") == (0.1, 0.01)
    with pytest.raises(ValueError, match="####"):
        gsm8k_answer("no marker")


def test_arith_split_has_the_tiny_presets_levels() -> None:
    from sgpo.tasks.tiny import TINY_PRESET

    items = load_arith()
    assert {it.level for it in items} == {str(s) for s in TINY_PRESET.eval_steps}
    assert items == load_arith(), "seeded: the same split every time"
    limited = load_benchmark("arith", limit=2)
    assert len(limited) == 2 * len(TINY_PRESET.eval_steps), "--limit applies per level"


def test_parse_benchmarks() -> None:
    assert parse_benchmarks("all") == list(BENCHMARKS)
    assert parse_benchmarks("gsm8k, MATH500,gsm8k") == ["gsm8k", "math500"]
    with pytest.raises(ValueError, match=r"unknown benchmark.*math501.*choose from math500"):
        parse_benchmarks("math501")


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkDataError, match=r"gsm8k/test\.jsonl.*does not exist.*--data-dir"):
        load_benchmark("gsm8k", tmp_path)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ('{"question": "q", "answer": "no marker"}', r"test\.jsonl:2: .*'#### N'"),
        ('{"question": "q"', r"test\.jsonl:2 is not valid JSON"),
        ('{"problem": "q", "answer": "#### 3"}', r"test\.jsonl:2 lacks the field 'question'"),
        ("[1, 2]", r"test\.jsonl:2 is a JSON list"),
    ],
)
def test_malformed_file_names_the_line(tmp_path: Path, line: str, match: str) -> None:
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n' + line + "\n")
    with pytest.raises(BenchmarkDataError, match=match):
        load_benchmark("gsm8k", tmp_path)


# ---------------------------------------------------------------- the gold test


@pytest.mark.parametrize(
    ("name", "least"),
    # Solutions as given: MATH-500's end in \boxed{}, GSM8K's in "#### N" (calculator notes <<a*b=c>> left in),
    # both read by the verifier's extraction exactly as a model's completion would be.
    [("math500", 0.99), ("gsm8k", 0.99), ("aime24", 0.99), ("minerva", 0.99), ("arith", 0.99)],
)
def test_gold_solutions_score_as_correct(name: BenchmarkName, least: float, verifier: MathVerifier) -> None:
    items = load_benchmark(name, SHARED_DATA)
    verdicts = score_completions(verifier, items, [[it.solution] for it in items])
    rate = _rate(verdicts)
    print(f"{name}: gold solutions {rate:.4f} of {len(items)}")
    failures = [
        (it.id, it.answer, v[0]) for it, v in zip(items, verdicts, strict=True) if v[0].status != "correct"
    ]
    assert rate >= least, failures[:10]


@pytest.mark.parametrize("name", list(SIZES))
def test_gold_answers_as_written_score_as_correct(name: BenchmarkName, verifier: MathVerifier) -> None:
    items = load_benchmark(name, SHARED_DATA)
    raws = raw_answers(name)
    verdicts = score_completions(
        verifier, items, [[f"So the final answer is $\\boxed{{{raw}}}$."] for raw in raws]
    )
    rate = _rate(verdicts)
    print(f"{name}: boxed gold answers {rate:.4f} of {len(items)}")
    assert all(v[0].status != "unscorable" for v in verdicts)
    failures = [
        (it.id, raw, v[0])
        for it, raw, v in zip(items, raws, verdicts, strict=True)
        if v[0].status != "correct"
    ]
    assert rate >= 0.99, failures[:10]


def test_a_wrong_answer_is_wrong_and_tolerance_applies(verifier: MathVerifier) -> None:
    aime = BenchmarkItem(id="a", problem="p", answer="25")
    pct = BenchmarkItem(id="b", problem="p", answer="4.2", tolerance=0.1, unit="%")
    verdicts = score_completions(
        verifier,
        [aime, pct],
        [["\\boxed{025}", "\\boxed{26}", "no answer"], ["\\boxed{4.28}", "\\boxed{4.35}"]],
    )
    assert [v.status for v in verdicts[0]] == ["correct", "wrong", "wrong"]
    assert [v.status for v in verdicts[1]] == ["correct", "wrong"]
    with pytest.raises(ValueError, match="one list of completions per item"):
        score_completions(verifier, [aime], [])
