"""The size-guarded arithmetic evaluator that keeps power and factorial towers away from sympy."""

from __future__ import annotations

from fractions import Fraction

import pytest

from sgpo.verifier.arith import HUGE_NEG, HUGE_POS, UNKNOWN, evaluate


@pytest.mark.parametrize(
    ("text", "value", "exact"),
    [
        ("2^{10}", Fraction(1024), True),
        ("-2^{2}", Fraction(-4), True),
        ("(-2)^{3}", Fraction(-8), True),
        ("2^{-1}", Fraction(1, 2), True),
        ("2^3^2", Fraction(512), True),
        ("\\frac{1}{3}+\\frac{1}{6}", Fraction(1, 2), True),
        ("7.8\\times 10^2", Fraction(780), False),
        ("3\\cdot 4 - 6 \\div 2", Fraction(9), True),
        ("(3!)!", Fraction(720), True),
        ("[1+2]*{3}", Fraction(9), True),
        ("0^0", Fraction(1), True),
    ],
)
def test_exact_values(text: str, value: Fraction, exact: bool) -> None:
    got = evaluate(text)
    assert got is not None
    assert (got.value, got.exact) == (value, exact)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10^{10^{10^{10}}}", HUGE_POS),
        ("-10^{10^{10^{10}}}", HUGE_NEG),
        ("(-10)^{10^{9}}", HUGE_POS),
        ("(-10)^{10^{9}+1}", HUGE_NEG),
        ("(-10)^{10^{10^{10}}}", UNKNOWN),
        ("((10!)!)!", HUGE_POS),
        ("9^{9^{9}} + 5", HUGE_POS),
        ("9^{9^{9}} \\cdot 2", HUGE_POS),
        ("10^{10^{10}}-10^{10^{10}}", UNKNOWN),
        ("\\frac{1}{10^{10^{10}}}", UNKNOWN),
        ("2^{1000000}", UNKNOWN),
    ],
)
def test_towers_are_sized_not_computed(text: str, value: object) -> None:
    got = evaluate(text)
    assert got is not None and got.value == value


@pytest.mark.parametrize(
    "text",
    [
        "x+1",
        "2(3)",
        "1+",
        "\\sqrt{2}",
        "2^{1/2}",
        "(-1)!",
        "1/0",
        "0^{-1}",
        "",
        "{" * 5000 + "1" + "}" * 5000,
    ],
)
def test_not_arithmetic(text: str) -> None:
    assert evaluate(text) is None


def test_long_input_is_refused_before_parsing() -> None:
    assert evaluate("1+" * 300 + "1") is None
