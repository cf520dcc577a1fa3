"""Exact integer/rational arithmetic on short answers ("2^{10}", "7.8\\times 10^2", "(3!)!"), with size guards.

Sympy evaluates `10^{10^{10^{10}}}` or `(10!)!` eagerly and never returns. Here each power and factorial
is sized first (digits ~ b*log10|a|, log10 n!): results up to `EXACT_DIGITS` digits are computed, results
certainly above `HUGE_DIGITS` digits become `HUGE` (sign kept), anything between is `UNKNOWN`. So a
tower against a small number is decided at once (they differ) and two towers are reported as too large
instead of hanging a worker. Input is capped in length and nesting, so the recursive parser is bounded.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

EXACT_DIGITS = 100_000
HUGE_DIGITS = 10_000_000
MAX_CHARS = 400
MAX_DEPTH = 60

_TOKEN = re.compile(r"\s*(\d+\.\d*|\.\d+|\d+|\\frac|\\cdot|\\times|\\div|[-+*/^(){}!\[\]])")


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
    value: Value
    exact: bool  # no decimal point anywhere: compare exactly, not rounded


class _NotArithmetic(Exception):
    pass


def _digits(x: Fraction) -> float:
    """log10 of |x| (x != 0), good to a few digits."""
    return math.log10(abs(x.numerator)) - math.log10(x.denominator) if x.numerator else -math.inf


def _neg(v: Value) -> Value:
    if isinstance(v, Huge):
        return Huge(-v.sign)
    return v if isinstance(v, Unknown) else -v


def _add(a: Value, b: Value) -> Value:
    if isinstance(a, Unknown) or isinstance(b, Unknown):
        return UNKNOWN
    if isinstance(a, Huge) and isinstance(b, Huge):
        return a if a.sign == b.sign else UNKNOWN
    if isinstance(a, Huge) or isinstance(b, Huge):
        return a if isinstance(a, Huge) else b
    return a + b


def _mul(a: Value, b: Value) -> Value:
    if isinstance(a, Unknown) or isinstance(b, Unknown):
        return UNKNOWN
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        if a and b and _digits(a) + _digits(b) > EXACT_DIGITS:
            return UNKNOWN
        return a * b
    if isinstance(a, Huge) and isinstance(b, Huge):
        return Huge(a.sign * b.sign)
    huge, other = (a, b) if isinstance(a, Huge) else (b, a)
    assert isinstance(huge, Huge) and isinstance(other, Fraction)
    if other == 0:
        return Fraction(0)
    if abs(other) < 1:
        return UNKNOWN
    return Huge(huge.sign * (1 if other > 0 else -1))


def _div(a: Value, b: Value) -> Value:
    if isinstance(b, Fraction):
        if b == 0:
            raise _NotArithmetic("division by zero")
        if isinstance(a, Fraction):
            return a / b
        if isinstance(a, Huge) and abs(b) <= 1:
            return Huge(a.sign * (1 if b > 0 else -1))
    return UNKNOWN


def _pow(a: Value, b: Value) -> Value:
    if isinstance(a, Unknown) or isinstance(b, Unknown):
        return UNKNOWN
    if isinstance(b, Huge):
        if isinstance(a, Fraction) and a > 1 and b.sign > 0:
            return HUGE_POS
        return UNKNOWN
    if b.denominator != 1:
        raise _NotArithmetic("fractional exponent")
    if isinstance(a, Huge):
        return UNKNOWN if b <= 0 else (HUGE_POS if a.sign > 0 or b.numerator % 2 == 0 else HUGE_NEG)
    e = b.numerator
    if a == 0:
        if e < 0:
            raise _NotArithmetic("zero to a negative power")
        return Fraction(1) if e == 0 else Fraction(0)
    size = abs(e) * abs(_digits(a))
    if size > HUGE_DIGITS and e > 0 and abs(a) > 1:
        return HUGE_POS if a > 0 or e % 2 == 0 else HUGE_NEG
    if size > EXACT_DIGITS:
        return UNKNOWN
    return a**e


def _factorial(v: Value) -> Value:
    if isinstance(v, Unknown):
        return UNKNOWN
    if isinstance(v, Huge):
        if v.sign < 0:
            raise _NotArithmetic("factorial of a negative number")
        return HUGE_POS
    if v.denominator != 1 or v < 0:
        raise _NotArithmetic("factorial of a non-natural number")
    n = v.numerator
    size = math.lgamma(n + 1) / math.log(10)
    if size > HUGE_DIGITS:
        return HUGE_POS
    if size > EXACT_DIGITS:
        return UNKNOWN
    return Fraction(math.factorial(n))


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.toks, self.i, self.exact = tokens, 0, True

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _NotArithmetic(f"expected {expected!r}")
        self.i += 1
        return tok

    def expr(self) -> Value:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            v = _add(v, rhs if op == "+" else _neg(rhs))
        return v

    def term(self) -> Value:
        v = self.unary()
        while self.peek() in ("*", "/", "\\cdot", "\\times", "\\div"):
            op = self.take()
            rhs = self.unary()
            v = _div(v, rhs) if op in ("/", "\\div") else _mul(v, rhs)
        return v

    def unary(self) -> Value:
        if self.peek() in ("-", "+"):
            op = self.take()
            v = self.unary()
            return _neg(v) if op == "-" else v
        return self.power()

    def power(self) -> Value:
        base = self.postfix()
        if self.peek() == "^":
            self.take()
            return _pow(base, self.unary())
        return base

    def postfix(self) -> Value:
        v = self.atom()
        while self.peek() == "!":
            self.take()
            v = _factorial(v)
        return v

    def atom(self) -> Value:
        tok = self.take()
        if tok in ("(", "{", "["):
            v = self.expr()
            self.take({"(": ")", "{": "}", "[": "]"}[tok])
            return v
        if tok == "\\frac":
            self.take("{")
            num = self.expr()
            self.take("}")
            self.take("{")
            den = self.expr()
            self.take("}")
            return _div(num, den)
        if tok[0].isdigit() or tok[0] == ".":
            if "." in tok:
                self.exact = False
            return Fraction(tok)
        raise _NotArithmetic(f"unexpected {tok!r}")


def _tokens(s: str) -> list[str] | None:
    out: list[str] = []
    pos = 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None:
            return None if s[pos:].strip() else out
        out.append(m.group(1))
        pos = m.end()
    return out


def evaluate(s: str) -> Arith | None:
    """The exact value of an arithmetic answer, or None when it is not plain arithmetic."""
    if len(s) > MAX_CHARS:
        return None
    depth = peak = 0
    for ch in s:
        if ch in "({[":
            depth += 1
            peak = max(peak, depth)
        elif ch in ")}]":
            depth -= 1
    if peak > MAX_DEPTH:
        return None
    toks = _tokens(s)
    if not toks:
        return None
    parser = _Parser(toks)
    try:
        value = parser.expr()
    except (_NotArithmetic, OverflowError, ValueError, ZeroDivisionError):
        return None
    if parser.peek() is not None:
        return None
    return Arith(value, parser.exact)
