"""The synthetic arithmetic task: format the judge and verifier read, seeded splits, JSONL round trip."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo.core.errors import InvalidInputError
from sgpo.core.steps import split_steps
from sgpo.tasks.arith import (
    ArithSpec,
    format_prompt,
    generate_problem,
    generate_split,
    iter_problems,
    read_arith_problems,
    sloppy_solution,
    write_jsonl,
    write_splits,
)
from sgpo.tasks.pretrain import extract_answer

STEP = re.compile(r"^Step (\d+): (\d+) ([-+*]) (\d+) = (\d+)$")
WORDS = {"Add": "+", "Subtract": "-", "Multiply by": "*"}


def _check(problem_text: str, solution: str, answer: str, steps: int, spec: ArithSpec) -> None:
    start = int(re.match(r"Start with (\d+)\.", problem_text).group(1))  # type: ignore[union-attr]
    ops = re.findall(r"(Add|Subtract|Multiply by) (\d+)\.", problem_text)
    assert len(ops) == steps
    lines = solution.split("\n")
    assert len(lines) == steps + 1
    assert lines[-1] == f"Answer: {answer}"
    value = start
    for k, (line, (word, b)) in enumerate(zip(lines[:-1], ops, strict=True), 1):
        m = STEP.match(line)
        assert m, line
        assert int(m.group(1)) == k
        assert int(m.group(2)) == value
        assert m.group(3) == WORDS[word]
        assert int(m.group(4)) == int(b)
        assert spec.operand_min <= int(b) <= spec.operand_max
        c = eval(f"{value} {m.group(3)} {b}")
        assert int(m.group(5)) == c
        assert 0 <= c <= spec.value_max
        value = c
    assert int(answer) == value


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    steps=st.integers(1, 10),
    ops=st.sampled_from([("+", "-"), ("+", "-", "*"), ("*",), ("+",)]),
    operand_max=st.integers(2, 20),
)
def test_every_claim_is_true_and_the_chain_is_consistent(
    seed: int, steps: int, ops: tuple[str, ...], operand_max: int
) -> None:
    spec = ArithSpec(ops=ops, operand_min=1, operand_max=operand_max)  # type: ignore[arg-type]
    try:
        p = generate_problem(random.Random(seed), steps, spec)
    except InvalidInputError as e:  # only "*" or "+" alone can box themselves in
        assert e.field == "ops"
        return
    _check(p.problem, p.solution, p.answer, steps, spec)
    assert p.steps == steps


def test_example_format() -> None:
    p = generate_problem(random.Random(1), 3, ArithSpec(ops=("+", "-", "*")))
    assert p.problem.startswith("Start with ")
    assert p.solution.splitlines()[0].startswith("Step 1: ")
    assert format_prompt(p.problem) == p.problem + "\n"
    assert extract_answer(p.solution) == p.answer


def test_solution_splits_into_one_step_per_claim_plus_the_answer() -> None:
    p = generate_problem(random.Random(4), 5)
    steps = split_steps(p.solution)
    assert [s.text for s in steps] == p.solution.split("\n")


def test_splits_are_seeded_distinct_and_disjoint(tmp_path: Path) -> None:
    a = generate_split("test", (1, 3), 50, seed=7)
    b = generate_split("test", (1, 3), 50, seed=7)
    c = generate_split("test", (1, 3), 50, seed=8)
    assert a == b
    assert a != c
    assert [p.steps for p in a] == [1] * 50 + [3] * 50
    assert len({p.problem for p in a}) == 100
    assert len({p.unique_id for p in a}) == 100
    paths = write_splits(tmp_path, (1, 2), (1, 2, 3), 300, 40, seed=0)
    train, test = read_arith_problems(paths["train"]), read_arith_problems(paths["test"])
    assert len(test) == 120 and len(train) == 600
    assert not {p.problem for p in train} & {p.problem for p in test}


def test_stream_is_seeded_and_skips_excluded_problems() -> None:
    banned = {p.problem for p in generate_split("test", (1,), 500, seed=0)}
    s1 = iter_problems((1, 2), seed=3, exclude=banned)
    s2 = iter_problems((1, 2), seed=3, exclude=banned)
    first = [next(s1) for _ in range(300)]
    assert first == [next(s2) for _ in range(300)]
    assert not {p.problem for p in first} & banned
    assert {p.steps for p in first} == {1, 2}


def test_jsonl_has_the_real_datasets_fields(tmp_path: Path) -> None:
    problems = generate_split("train", (2,), 5, seed=0)
    assert write_jsonl(tmp_path / "x.jsonl", problems) == 5
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert set(rows[0]) == {"problem", "answer", "solution", "steps", "unique_id"}
    assert read_arith_problems(tmp_path / "x.jsonl") == problems


def test_bad_input_is_an_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as e:
        generate_problem(random.Random(0), 0)
    assert e.value.field == "steps"
    with pytest.raises(InvalidInputError) as e:
        ArithSpec(ops=("/",))  # type: ignore[arg-type]
    assert e.value.field == "ops"
    with pytest.raises(InvalidInputError) as e:
        ArithSpec(operand_min=5, operand_max=2)
    assert e.value.field == "operand_min"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "x"}\n')
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:1"):
        read_arith_problems(bad)


def _claims(solution: str) -> list[tuple[int, str, int, int]]:
    out = []
    for line in solution.split("\n")[:-1]:
        m = re.match(r"^Step \d+: (-?\d+) ([-+*]) (\d+) = (-?\d+)$", line)
        assert m, line
        out.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    return out


def _true(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def test_sloppy_solution_slips_by_one_or_two_and_carries_on_from_the_slip() -> None:
    spec = ArithSpec(ops=("+", "-", "*"), start_max=9)
    rng = random.Random(0)
    for _ in range(50):
        p = generate_problem(rng, 5, spec)
        assert sloppy_solution(p, random.Random(1), 0.0) == p.solution
        text = sloppy_solution(p, random.Random(1), 1.0)
        claims = _claims(text)
        assert [(op, b) for _, op, b, _ in claims] == [(op, b) for _, op, b, _ in p.claims]  # the problem's
        assert claims[0][0] == p.claims[0][0]
        for (a, op, b, c), nxt in zip(claims, [*claims[1:], None], strict=True):
            assert c - _true(a, op, b) in (-2, -1, 1, 2)  # every step slipped, by 1 or 2
            if nxt is not None:
                assert nxt[0] == c  # the next step starts from the slipped value
        assert text.endswith(f"Answer: {claims[-1][3]}")


def test_sloppy_solution_slip_rate_and_first_error_match_the_judge() -> None:
    """About `slip_prob` of the steps slip, and the symbolic judge's first wrong step is the first slip."""
    from sgpo.judge.config import JudgeConfig
    from sgpo.judge.judge import build_judge
    from sgpo.judge.metrics import JudgeMetrics
    from sgpo.judge.types import JudgeItem

    rng, style = random.Random(2), random.Random(3)
    problems = [generate_problem(rng, 4, ArithSpec(start_max=9)) for _ in range(300)]
    texts = [sloppy_solution(p, style, 0.1) for p in problems]
    slipped = [[c != _true(a, op, b) for a, op, b, c in _claims(t)] for t in texts]
    rate = sum(map(sum, slipped)) / (4 * len(texts))
    assert 0.07 < rate < 0.13, rate  # 1200 steps: the binomial sd is 0.009
    judge = build_judge(JudgeConfig(), JudgeMetrics())
    try:
        for p, t, s in zip(problems[:80], texts[:80], slipped[:80], strict=True):
            (v,) = judge.judge(p.problem, p.solution, [JudgeItem(response=t)])
            assert v.first_error_step == (s.index(True) if any(s) else -1), t
            drift = sum(c - _true(a, op, b) for a, op, b, c in _claims(t))
            assert (extract_answer(t) == p.answer) == (drift == 0)  # later slips can cancel earlier ones
    finally:
        judge.close()


def test_sloppy_solution_rejects_problems_without_claims_and_bad_rates(tmp_path: Path) -> None:
    p = generate_problem(random.Random(0), 2)
    write_jsonl(tmp_path / "p.jsonl", [p])
    (read,) = read_arith_problems(tmp_path / "p.jsonl")
    with pytest.raises(InvalidInputError, match="problem"):
        sloppy_solution(read, random.Random(0), 0.1)
    with pytest.raises(InvalidInputError, match="slip_prob"):
        sloppy_solution(p, random.Random(0), 1.5)
