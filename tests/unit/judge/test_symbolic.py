"""The symbolic checker: hand-written step sequences with known first errors, the issue's traps, the synthetic
task's format (chain and reference checks), real gold solutions (no false alarms), and fuzzing."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sgpo.core import split_steps
from sgpo.judge.config import SymbolicBackend
from sgpo.judge.symbolic import (
    AnswerStep,
    ChainStep,
    Unsupported,
    check_steps,
    evaluate,
    find_claims,
    normalize,
    parse_format_step,
    parse_reference,
    tokenize,
)
from tests.support import SHARED_DATA

CFG = SymbolicBackend()


def first_error(steps: list[str], reference: str = "", cfg: SymbolicBackend = CFG) -> int:
    return check_steps(steps, cfg, parse_reference(reference)).first_error_step


def verdicts(text: str) -> list[bool]:
    return [c.ok for c in find_claims(text, CFG)]


# ---------------------------------------------------------------------------------------------- known errors


def test_first_false_claim_is_the_first_error() -> None:
    steps = [
        "Natalia sold 48 clips in April.",
        "In May she sold half as many: 48 / 2 = 24.",
        "Altogether 48 + 24 = 72 clips.",
        "Each clip costs $3, so she earned 72 * 3 = 206 dollars.",  # 216
        "Then 206 + 10 = 216.",
    ]
    r = check_steps(steps, CFG)
    assert r.first_error_step == 3
    assert "72 * 3 = 206" in r.reason and "216" in r.reason
    assert r.claims_checked == 3  # it stops reading at the first false claim


def test_later_steps_do_not_matter_once_an_error_is_found() -> None:
    assert first_error(["2 + 2 = 5", "3 + 3 = 7"]) == 0
    assert first_error(["2 + 2 = 4", "3 + 3 = 6", "10 - 1 = 8"]) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\(1/3 \\times 18 = 6\\) flamingos", [True]),
        ("Total = Cost * Gallons = $3.5 * 4000 = $14,000.", [True]),
        ("2/5 * 4000 = 800 gallons", [False]),  # ProcessBench gsm8k-2, step 1
        ("\\(2 \\text{ books} \\times 2 \\text{ pounds/book} = 4 \\text{ pounds}\\)", [True]),
        (
            "\\[ 8 \\text{ pounds} + 4 \\text{ pounds} + 3 \\text{ pounds} + 6 \\text{ pounds} = 20 \\text{ pounds} \\]",
            [False],
        ),
        ("Natalia sold 48/2 = <<48/2=24>>24 clips", [True, True]),  # the GSM8K note and the prose
        ("She sold 48/2 = <<48/2=23>>23 clips", [False, False]),
        ("\\frac{3}{4} \\cdot 100\\% = 75\\%", [True]),
        ("2^{10} = 1024 and \\sqrt{16} = 4", [True, True]),
        ("5 x 3 = 15, 12 \\div 4 = 3, 7 − 2 = 5", [True, True, True]),
        ("20% of 50 = 10", [True]),
        ("20\\% of 50 = 12", [False]),
        ("3 + 4 = 7 apples and 7 * 2 = 15", [True, False]),
        ("\\[ 729,\\!000 / 1{,}000 = 729 \\]", [True]),
        ("(3 + 5) * 2 = 16 = 4 * 4", [True, True]),
    ],
)
def test_claims_in_real_notations(text: str, expected: list[bool]) -> None:
    assert verdicts(text) == expected


# ----------------------------------------------------------------------------------------------- the traps


@pytest.mark.parametrize(
    "text",
    [
        "1/2 = 0.5",
        "0.5 = 1/2",
        "2/4 = \\frac{1}{2}",
        "\\frac{6}{12} = 0.50",
        "3/4 * 100 = 75%",
        "(5/20) * 100 = 25%",
    ],
)
def test_trap_same_value_in_another_form_is_correct(text: str) -> None:
    assert verdicts(text) == [True]


@pytest.mark.parametrize(
    "text",
    [
        "1/3 = 0.33",
        "2/3 = 0.67",
        "2/3 = 0.667",
        "100/7 = 14.29",  # money rounded to cents
        "10/3 = 3.3",
        "1/3 = 33.33%",
        "150/7 \\approx 21",  # ≈ with an integer
        "22/7 ≈ 3.14",
        "(2.8284)^2 = 8",  # a rounded input (2.8284 ≈ √8)
        "1/3 * 3 = 0.999 ...",
    ],
)
def test_trap_rounding_a_reader_accepts(text: str) -> None:
    assert verdicts(text) == [True], text


@pytest.mark.parametrize("text", ["2/3 = 0.5", "1/3 = 0.3333 + 1", "100/7 = 14.39", "22/7 ≈ 3.5", "10/3 = 3"])
def test_rounding_tolerance_is_not_a_loophole(text: str) -> None:
    assert False in verdicts(text), text


def test_trap_lhs_referencing_earlier_steps_is_not_guessed() -> None:
    steps = [
        "Let the total be 12 apples, so total = 12.",
        "Adding the 5 from the basket: total + 5 = 17.",  # must not be read as '+5 = 17'
        "The amount from step 2 - 3 = 14 apples remain.",  # '2 - 3' belongs to 'step 2'
        "Twice that, 2 * 14 = 28.",
    ]
    r = check_steps(steps, CFG)
    assert r.first_error_step == -1
    assert r.claims_checked == 1  # only '2 * 14 = 28' is closed arithmetic
    # A literal reference to an earlier result is checked like any number.
    assert first_error(["3 * 4 = 12", "12 + 5 = 18"]) == 1


def test_trap_no_arithmetic_returns_minus_one_not_a_guess() -> None:
    steps = [
        "We need the number of ways to arrange the letters.",
        "Since all letters are distinct, every arrangement is counted once.",
        "Therefore the answer is the number of permutations.",
    ]
    r = check_steps(steps, CFG)
    assert (r.first_error_step, r.claims_checked) == (-1, 0)
    assert "no checkable arithmetic" in r.reason


@pytest.mark.parametrize(
    "text",
    [
        "x - 5 = 3",
        "2x + 3 = 11",
        "f(3) = 9",
        "half of 50 = 25",
        "1 hour = 60 minutes",
        "6 \\text{ inches} = \\frac{6}{12} \\text{ feet}",  # a unit conversion, not an equation of numbers
        "$1,500 * 1,000 = 1.5 million",
        "\\cos 60^\\circ = \\frac{1}{2}",
        "\\binom{3}{2} = 3",
        "\\pi (1)^2 = \\frac{1}{2}\\pi",
        "9 \\div 7 = 1 with a remainder of 2",
        "17/3 = 5 and 2/3",
        "100 / 6= 16 and (2/3)",
        "3 / 1/4 = 12 quarter miles",
        "Week 1 + Week 2 = 35 + 35",
        "\\frac{2}{9} = 0.\\overline{2}",
        "If x=1, we have $1 = \\sqrt{11-2} + 4$, which is not true",
        "- 3 + 4 = 7 is the second bullet",  # bullet stripped: 3 + 4 = 7 is checked and true
    ],
)
def test_not_closed_arithmetic_is_skipped_never_flagged(text: str) -> None:
    assert False not in verdicts(text), text


# ------------------------------------------------------------------------------------ the synthetic format

REFERENCE = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 32\nAnswer: 32"


def steps_of(text: str) -> list[str]:
    return [s.text for s in split_steps(text)]


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (REFERENCE, -1),  # correct: nothing to find
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nStep 3: 35 - 4 = 31\nAnswer: 31", 1),  # arithmetic slip
        (
            "Step 1: 7 + 5 = 12\nStep 2: 12 * 4 = 48\nStep 3: 48 - 4 = 44\nAnswer: 44",
            1,
        ),  # copied a wrong operand
        ("Step 1: 7 + 5 = 12\nStep 2: 7 * 3 = 21\nStep 3: 21 - 4 = 17\nAnswer: 17", 1),  # dropped the chain
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nAnswer: 36", 2),  # answered one step early
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 32\nAnswer: 23", 3),  # wrong answer line
        ("Step 1: 5 + 7 = 12\nStep 2: 3 * 12 = 36\nStep 3: 36 - 4 = 32\nAnswer: 32", -1),  # commuted + and *
        (
            "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 4 - 36 = -32\nAnswer: -32",
            2,
        ),  # '-' does not commute
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 =\nAnswer: 32", 2),  # a malformed step
        ("7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 32\nAnswer: 32", -1),  # headers are optional against a reference
        ("7 + 5 = 12\n12 * 3 = 36\n36 - 4 = 31\nAnswer: 31", 2),
    ],
)
def test_synthetic_task_with_reference(response: str, expected: int) -> None:
    assert first_error(steps_of(response), REFERENCE) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nAnswer: 36", -1),
        ("Step 1: 7 + 5 = 12\nStep 2: 7 * 3 = 21\nAnswer: 21", 1),  # dropped the chain
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nAnswer: 63", 2),  # the answer is not the last result
        ("Step 1: 7 + 5 = 12\nStep 2: 12 * 4 = 48\nAnswer: 48", -1),  # a wrong operand needs the reference
    ],
)
def test_chain_consistency_without_reference(response: str, expected: int) -> None:
    assert first_error(steps_of(response)) == expected


def test_chain_and_reference_checks_can_be_turned_off() -> None:
    off = SymbolicBackend(chain_check=False, reference_check=False)
    dropped = "Step 1: 7 + 5 = 12\nStep 2: 7 * 3 = 21\nStep 3: 21 - 4 = 17\nAnswer: 17"
    assert first_error(steps_of(dropped), REFERENCE, off) == -1
    assert first_error(steps_of(dropped), REFERENCE, SymbolicBackend(reference_check=False)) == 1
    slip = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nStep 3: 35 - 4 = 31\nAnswer: 31"
    assert first_error(steps_of(slip), REFERENCE, off) == 1  # arithmetic is always checked


def test_reference_in_prose_is_not_used_for_alignment() -> None:
    prose = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nAltogether 48+24 = <<48+24=72>>72.\n#### 72"
    assert parse_reference(prose) == []
    assert first_error(["Step 1: 48 / 2 = 24", "Step 2: 24 * 3 = 72"], prose) == -1


# ------------------------------------------------------------------------------------------------ real data


def test_gold_gsm8k_solutions_are_not_flagged() -> None:
    """Human-written GSM8K solutions (first 400 of the test set): a false alarm rate near zero. The two flags in
    the whole test split (1319) are claims false as written ('$32 - $20 = $300', '364 / 4 = 273')."""
    rows = [
        json.loads(line) for line in (SHARED_DATA / "gsm8k" / "test.jsonl").read_text().splitlines()[:400]
    ]
    flagged, claims = 0, 0
    for row in rows:
        r = check_steps([s.text for s in split_steps(row["answer"])], CFG)
        flagged += r.first_error_step != -1
        claims += r.claims_checked
    assert claims > 1000  # it does read the calculator notes and the prose
    assert flagged <= 1


def test_processbench_correct_solutions_are_not_flagged_and_errors_are_found() -> None:
    items = json.loads((SHARED_DATA / "processbench" / "gsm8k.json").read_text())[:120]
    correct = [x for x in items if x["label"] == -1]
    wrong = [x for x in items if x["label"] != -1]
    assert sum(check_steps(x["steps"], CFG).first_error_step != -1 for x in correct) == 0
    hits = sum(check_steps(x["steps"], CFG).first_error_step == x["label"] for x in wrong)
    assert hits >= 3  # arithmetic slips are a minority of ProcessBench errors; it must find those


# --------------------------------------------------------------------------------------------------- fuzzing

_OPS = ["+", "-", "*", "/"]


@st.composite
def true_claims(draw: st.DrawFn) -> tuple[str, Fraction]:
    n = draw(st.integers(2, 4))
    nums = [draw(st.integers(1, 999)) for _ in range(n)]
    ops = [draw(st.sampled_from(_OPS)) for _ in range(n - 1)]
    if "/" in ops:  # one division at most, so the reading never depends on a / b / c conventions
        first = ops.index("/")
        ops = [o if o != "/" or k == first else "+" for k, o in enumerate(ops)]
    text = str(nums[0])
    for o, x in zip(ops, nums[1:], strict=True):
        text += f" {o} {x}"
    return text, Fraction(eval(text.replace("/", "*Fraction(1)/")))


@settings(max_examples=150, deadline=None)
@given(true_claims(), st.sampled_from(["{e} = {v}", "So {e} = {v} units.", "\\({e} = {v}\\)", "<<{e}={v}>>"]))
def test_random_true_claims_hold_and_perturbed_ones_fail(claim: tuple[str, Fraction], fmt: str) -> None:
    expr, value = claim
    shown = str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    assert verdicts(fmt.format(e=expr, v=shown)) == [True]
    wrong = value + 1 if value.denominator == 1 else value + Fraction(1, 3)
    wrong_shown = str(wrong.numerator) if wrong.denominator == 1 else f"{wrong.numerator}/{wrong.denominator}"
    assert verdicts(fmt.format(e=expr, v=wrong_shown)) == [False]


_PIECES = [
    *"0123456789+-*/^=()%.,{}\\ x$<>≈√",
    "\\frac",
    "\\text{",
    "\\sqrt",
    "<<",
    ">>",
    "Step 1:",
    "\n",
    "of",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=80).map("".join))
def test_any_text_is_read_without_raising(text: str) -> None:
    r = check_steps([text, text[::-1]], CFG)
    assert -1 <= r.first_error_step <= 1


def test_huge_and_deep_inputs_stay_bounded() -> None:
    assert verdicts("9" * 5000 + " + 1 = 2") == []  # a number too long to read is skipped
    assert verdicts("2^999999 = 3") == []
    assert verdicts("(" * 3000 + "1" + ")" * 3000 + " + 1 = 2") == []
    assert verdicts("\\frac{" * 500 + "1" + "}{2}" * 500 + " = 3") == []
    assert first_error(["1 + 1 = 2 " * 20000]) == -1


# ------------------------------------------------------------------------------------- the layers, one by one


def test_normalize_turns_latex_and_prose_into_plain_arithmetic() -> None:
    assert normalize("\\frac{1}{2} \\times 14{,}000").split() == ["((1)/(2))", "*", "14000"]
    assert "√(49)" in normalize("\\sqrt{49}")
    assert "⟦pound⟧" in normalize("8 \\text{ pounds}")
    assert "⊗" in normalize("20% of 50")


def test_tokenize_kinds() -> None:
    kinds = [t.kind for t in tokenize("(3 + 4)% = 7 ≈ x")]
    assert kinds == ["lp", "num", "op", "num", "rp", "pct", "eq", "num", "eq", "word"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2 ^ 10", Fraction(1024)),
        ("(2)(3)", Fraction(6)),
        ("√(9/4)", Fraction(3, 2)),
        ("25%", Fraction(1, 4)),
    ],
)
def test_evaluate_expression(text: str, value: Fraction) -> None:
    assert evaluate(tokenize(text)).value == value


@pytest.mark.parametrize("text", ["6 / 2 / 3", "2(3)", "50 + 10%", "√(2)", "2 ^ 1000", "012 + 1"])
def test_ambiguous_or_unbounded_expressions_are_unsupported(text: str) -> None:
    with pytest.raises(Unsupported):
        evaluate(tokenize(text))


def test_parse_format_step_reads_the_synthetic_format() -> None:
    assert parse_format_step("Step 2: 7 × 3 = 21") == ChainStep(Fraction(7), "*", Fraction(3), Fraction(21))
    assert parse_format_step("Answer: 21") == AnswerStep(Fraction(21))
    assert parse_format_step("7 × 3 = 21") is None
    assert parse_format_step("7 × 3 = 21", need_header=False) == ChainStep(
        Fraction(7), "*", Fraction(3), Fraction(21)
    )
