"""Exact arithmetic shared by the verifier and the judge: literals, printing, and the size-guarded evaluator
that keeps power and factorial towers away from sympy."""

from __future__ import annotations

from fractions import Fraction

import pytest

from sgpo.common.exact import (
    HUGE_NEG,
    HUGE_POS,
    UNKNOWN,
    decimal_text,
    evaluate,
    exact_sqrt,
    format_exact,
    parse_decimal,
)


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


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", Fraction(12)),
        ("3.50", Fraction(7, 2)),
        (".5", Fraction(1, 2)),
        ("3.", Fraction(3)),
        ("-4", Fraction(-4)),
    ],
)
def test_parse_decimal_is_exact(text: str, value: Fraction) -> None:
    assert parse_decimal(text) == value == Fraction(text)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Fraction(7), "7"),
        (Fraction(-3, 4), "-0.75"),
        (Fraction(1, 3), "1/3 (≈ 0.333333)"),
        (Fraction(1, 2**13), "1/8192"),  # terminating, but 13 places
    ],
)
def test_format_exact(value: Fraction, text: str) -> None:
    assert format_exact(value) == text


def test_decimal_text_round_trips_terminating_values_and_cuts_the_rest() -> None:
    assert decimal_text(Fraction(28285, 10000)) == "2.8285"
    assert decimal_text(Fraction(5)) == "5"
    assert decimal_text(Fraction(1, 20)) == "0.05"
    assert decimal_text(Fraction(1, 3)) == "0." + "3" * 40


@pytest.mark.parametrize(
    ("value", "root"),
    [
        (Fraction(49), Fraction(7)),
        (Fraction(9, 4), Fraction(3, 2)),
        (Fraction(2), None),
        (Fraction(-4), None),
    ],
)
def test_exact_sqrt_only_for_rational_roots(value: Fraction, root: Fraction | None) -> None:
    assert exact_sqrt(value) == root
