"""Exact arithmetic shared by the verifier and the judge: decimal literals, sized values, one evaluator.

Both services compare numbers exactly (`fractions.Fraction`), never as floats, and both must finish on any
input (docs/design.md, "2. Services and contracts": a verifier or judge never hangs on a response):

- `parse_decimal` reads a decimal literal ("12", "3.50", ".5") as an exact Fraction; `format_exact` and
  `decimal_text` print one back. The judge's claim checker (`sgpo.judge.symbolic`) and its chain format use
  these; the verifier's evaluator below reads its literals with `parse_decimal` too.
- `evaluate` gives the exact value of a short answer ("2^{10}", "7.8\\times 10^2", "(3!)!"), with size guards.
  Sympy evaluates `10^{10^{10^{10}}}` or `(10!)!` eagerly and never returns. Here each power and factorial
  is sized first (digits ~ b*log10|a|, log10 n!): results up to `EXACT_DIGITS` digits are computed, results
  certainly above `HUGE_DIGITS` digits become `HUGE` (sign kept), anything between is `UNKNOWN`. So a tower
  against a small number is decided at once (they differ) and two towers are reported as too large instead
  of hanging a worker. Input is capped in length and nesting, so the recursive parser is bounded.

The judge reads prose claims with its own grammar over its tokens (`sgpo.judge.symbolic.expression`: percentages,
square roots, a refusal of ambiguous forms such as `a / b / c`), with a much smaller size bound; it shares the
literals and printing here, not the evaluator, because its rules for what counts as arithmetic differ.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction

EXACT_DIGITS = 100_000
HUGE_DIGITS = 10_000_000
MAX_CHARS = 400
MAX_DEPTH = 60
MAX_PRINTED_PLACES = 40  # `decimal_text` gives up on longer expansions (such values are not rounded inputs)

_TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|\\frac|\\cdot|\\times|\\div|[-+*/^(){}!\[\]])")
_CLOSING = {"(": ")", "{": "}", "[": "]"}

# ------------------------------------------------------------------------------------- literals and printing


@functools.lru_cache(maxsize=4096)
def parse_decimal(text: str) -> Fraction:
    """An exact Fraction from a decimal literal ("12", "3.50", ".5", "3.", "-4"); faster than Fraction(str)."""
    sign = -1 if text.startswith("-") else 1
    whole, _, fraction_digits = text.lstrip("+-").partition(".")
    return Fraction(sign * int((whole or "0") + fraction_digits), 10 ** len(fraction_digits))


def format_exact(x: Fraction) -> str:
    """A value for a reader: an integer, a terminating decimal, or `p/q (≈ float)`."""
    if x.denominator == 1:
        return str(x.numerator)
    odd_part = x.denominator
    while odd_part % 2 == 0:
        odd_part //= 2
    while odd_part % 5 == 0:
        odd_part //= 5
    if odd_part == 1 and x.denominator < 10**12:  # a terminating decimal
        places = 0
        while (x * 10**places).denominator != 1:
            places += 1
        return f"{float(x):.{places}f}" if places <= 12 else f"{x.numerator}/{x.denominator}"
    return f"{x.numerator}/{x.denominator} (≈ {float(x):.6g})"


def decimal_text(x: Fraction) -> str:
    """The decimal digits of |x| ("2.8285"), cut at `MAX_PRINTED_PLACES` places for non-terminating values."""
    places = 0
    while (x * 10**places).denominator != 1 and places < MAX_PRINTED_PLACES:
        places += 1
    digits = str(abs(x.numerator * 10**places // x.denominator)).rjust(places + 1, "0")
    return (digits[:-places] + "." + digits[-places:]) if places else digits


def exact_sqrt(x: Fraction) -> Fraction | None:
    """The square root of x when it is rational (x a perfect square of a fraction), else None."""
    if x < 0:
        return None
    numerator, denominator = math.isqrt(x.numerator), math.isqrt(x.denominator)
    if numerator * numerator != x.numerator or denominator * denominator != x.denominator:
        return None
    return Fraction(numerator, denominator)


# ------------------------------------------------------------------------------------------- sized values


@dataclass(frozen=True, slots=True)
class Huge:
    """A number certainly larger in magnitude than 10**HUGE_DIGITS."""

    sign: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """A value too large to compute exactly and not certainly huge (or huge minus huge)."""


HUGE_POS, HUGE_NEG, UNKNOWN = Huge(1), Huge(-1), Unknown()
Value = Fraction | Huge | Unknown


@dataclass(frozen=True, slots=True)
class Arith:
    """An evaluated answer."""

    value: Value
    exact: bool  # no decimal point anywhere: compare exactly, not rounded


class _NotArithmetic(Exception):
    pass


def _log10_abs(x: Fraction) -> float:
    """log10 of |x| (x != 0), good to a few digits."""
    return math.log10(abs(x.numerator)) - math.log10(x.denominator) if x.numerator else -math.inf


def _sign(x: Fraction) -> int:
    return 1 if x > 0 else -1


def _neg(value: Value) -> Value:
    if isinstance(value, Huge):
        return Huge(-value.sign)
    return value if isinstance(value, Unknown) else -value


def _add(left: Value, right: Value) -> Value:
    if isinstance(left, Unknown) or isinstance(right, Unknown):
        return UNKNOWN
    if isinstance(left, Huge) and isinstance(right, Huge):
        return left if left.sign == right.sign else UNKNOWN
    if isinstance(left, Huge) or isinstance(right, Huge):
        return left if isinstance(left, Huge) else right
    return left + right


def _mul(left: Value, right: Value) -> Value:
    if isinstance(left, Unknown) or isinstance(right, Unknown):
        return UNKNOWN
    if isinstance(left, Fraction) and isinstance(right, Fraction):
        if left and right and _log10_abs(left) + _log10_abs(right) > EXACT_DIGITS:
            return UNKNOWN
        return left * right
    if isinstance(left, Huge) and isinstance(right, Huge):
        return Huge(left.sign * right.sign)
    huge, other = (left, right) if isinstance(left, Huge) else (right, left)
    assert isinstance(huge, Huge) and isinstance(other, Fraction)
    if other == 0:
        return Fraction(0)
    if abs(other) < 1:
        return UNKNOWN
    return Huge(huge.sign * _sign(other))


def _div(left: Value, right: Value) -> Value:
    if isinstance(right, Fraction):
        if right == 0:
            raise _NotArithmetic("division by zero")
        if isinstance(left, Fraction):
            return left / right
        if isinstance(left, Huge) and abs(right) <= 1:
            return Huge(left.sign * _sign(right))
    return UNKNOWN


def _pow(base: Value, exponent: Value) -> Value:
    if isinstance(base, Unknown) or isinstance(exponent, Unknown):
        return UNKNOWN
    if isinstance(exponent, Huge):
        if isinstance(base, Fraction) and base > 1 and exponent.sign > 0:
            return HUGE_POS
        return UNKNOWN
    if exponent.denominator != 1:
        raise _NotArithmetic("fractional exponent")
    if isinstance(base, Huge):
        if exponent <= 0:
            return UNKNOWN
        return HUGE_POS if base.sign > 0 or exponent.numerator % 2 == 0 else HUGE_NEG
    power = exponent.numerator
    if base == 0:
        if power < 0:
            raise _NotArithmetic("zero to a negative power")
        return Fraction(1) if power == 0 else Fraction(0)
    digits = abs(power) * abs(_log10_abs(base))
    if digits > HUGE_DIGITS and power > 0 and abs(base) > 1:
        return HUGE_POS if base > 0 or power % 2 == 0 else HUGE_NEG
    if digits > EXACT_DIGITS:
        return UNKNOWN
    return base**power


def _factorial(value: Value) -> Value:
    if isinstance(value, Unknown):
        return UNKNOWN
    if isinstance(value, Huge):
        if value.sign < 0:
            raise _NotArithmetic("factorial of a negative number")
        return HUGE_POS
    if value.denominator != 1 or value < 0:
        raise _NotArithmetic("factorial of a non-natural number")
    n = value.numerator
    digits = math.lgamma(n + 1) / math.log(10)
    if digits > HUGE_DIGITS:
        return HUGE_POS
    if digits > EXACT_DIGITS:
        return UNKNOWN
    return Fraction(math.factorial(n))


# -------------------------------------------------------------------------------------------- the evaluator


class _AnswerParser:
    """Recursive descent over an answer's tokens: + - (left), * / \\cdot \\times \\div, unary signs, ^ (right),
    postfix !, and atoms: numbers, (...) {...} [...] groups, \\frac{a}{b}."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens, self.pos, self.exact = tokens, 0, True

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise _NotArithmetic(f"expected {expected!r}")
        self.pos += 1
        return token

    def expr(self) -> Value:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = _add(value, rhs if op == "+" else _neg(rhs))
        return value

    def term(self) -> Value:
        value = self.unary()
        while self.peek() in ("*", "/", "\\cdot", "\\times", "\\div"):
            op = self.take()
            rhs = self.unary()
            value = _div(value, rhs) if op in ("/", "\\div") else _mul(value, rhs)
        return value

    def unary(self) -> Value:
        if self.peek() in ("-", "+"):
            op = self.take()
            value = self.unary()
            return _neg(value) if op == "-" else value
        return self.power()

    def power(self) -> Value:
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return _pow(base, self.unary())
        return base

    def postfix(self) -> Value:
        value = self.atom()
        while self.peek() == "!":
            self.take()
            value = _factorial(value)
        return value

    def atom(self) -> Value:
        token = self.take()
        if token in _CLOSING:
            value = self.expr()
            self.take(_CLOSING[token])
            return value
        if token == "\\frac":
            self.take("{")
            numerator = self.expr()
            self.take("}")
            self.take("{")
            denominator = self.expr()
            self.take("}")
            return _div(numerator, denominator)
        if token[0].isdigit() or token[0] == ".":
            if "." in token:
                self.exact = False
            return parse_decimal(token)
        raise _NotArithmetic(f"unexpected {token!r}")


def _tokens(text: str) -> list[str] | None:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            return None if text[pos:].strip() else out
        out.append(match.group(1))
        pos = match.end()
    return out


def _nesting(text: str) -> int:
    depth = peak = 0
    for ch in text:
        if ch in "({[":
            depth += 1
            peak = max(peak, depth)
        elif ch in ")}]":
            depth -= 1
    return peak


def evaluate(text: str) -> Arith | None:
    """The exact value of an arithmetic answer, or None when it is not plain arithmetic."""
    if len(text) > MAX_CHARS or _nesting(text) > MAX_DEPTH:
        return None
    tokens = _tokens(text)
    if not tokens:
        return None
    parser = _AnswerParser(tokens)
    try:
        value = parser.expr()
    except (_NotArithmetic, OverflowError, ValueError, ZeroDivisionError):
        return None
    if parser.peek() is not None:
        return None
    return Arith(value, parser.exact)
