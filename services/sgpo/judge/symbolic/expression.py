"""The exact value of one expression's tokens, or `Unsupported` when it is not closed arithmetic.

The grammar is the judge's own (percentages, √ of perfect squares, implicit products only after ')'), and it
refuses forms a writer may mean two ways (`a / b / c`, `50 + 10%`, `2(3)`); the numbers are read and kept
exact by `sgpo.common.exact`, which the verifier shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from sgpo.common.exact import exact_sqrt, parse_decimal
from sgpo.judge.symbolic.limits import MAX_BITS, MAX_DEPTH, MAX_DIGITS, MAX_EXPONENT, MAX_EXPR_TOKENS
from sgpo.judge.symbolic.tokens import Token


class Unsupported(Exception):
    """The expression is not closed arithmetic we can evaluate exactly: skip the claim, never guess."""


@dataclass(frozen=True, slots=True)
class ExpressionValue:
    """An evaluated expression, with what a tolerant reader needs to know about how it was written."""

    value: Fraction
    literal: bool  # a single number, possibly signed and/or with %
    decimals: int  # decimal places of that number (literals only)
    scale: Fraction  # 1/100 for a percentage literal, else 1
    lead: Fraction | None  # the expression's first number, when it starts with one
    ops: int  # binary operations in the expression
    has_pct: bool = False  # a % anywhere in it


def _check_size(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise Unsupported("number too large")
    return x


class _ExpressionParser:
    """Recursive descent over one expression's tokens; raises Unsupported for anything else.

    Each level returns (value, is_percentage) where a percentage matters to the level above.
    """

    def __init__(self, tokens: Sequence[Token]) -> None:
        self.tokens, self.pos, self.depth, self.ops = tokens, 0, 0, 0

    def peek(self, kind: str, text: str | None = None) -> bool:
        if self.pos >= len(self.tokens):
            return False
        token = self.tokens[self.pos]
        return token.kind == kind and (text is None or token.text == text)

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsupported("nested too deeply")

    def parse(self) -> Fraction:
        value = self.expr()
        if self.pos != len(self.tokens):
            raise Unsupported(f"unexpected {self.tokens[self.pos].text!r}")
        return value

    def expr(self) -> Fraction:
        self.enter()
        value, has_pct = self.term()
        terms_with_pct = int(has_pct)
        n_terms = 1
        while self.peek("op", "+") or self.peek("op", "-"):
            op = self.take().text
            rhs, has_pct = self.term()
            terms_with_pct += has_pct
            n_terms += 1
            self.ops += 1
            value = _check_size(value + rhs if op == "+" else value - rhs)
        if terms_with_pct and n_terms > 1:
            # "50 + 10%" means 55 in prose and 50.1 in arithmetic: ambiguous, so not checked.
            raise Unsupported("a percentage added to a number")
        self.depth -= 1
        return value

    def term(self) -> tuple[Fraction, bool]:
        value, is_pct = self.unary()
        last_op = ""
        while True:
            if self.peek("op", "*") or self.peek("op", "/") or self.peek("of"):
                op = self.take().text
                op = "*" if op == "⊗" else op
                if op == "/" and last_op == "/":
                    raise Unsupported("a / b / c")  # "3 / 1/4 = 12" means 3 ÷ ¼ to its writer
                rhs, rhs_is_pct = self.unary()
                if op == "/" and rhs_is_pct:
                    raise Unsupported("divided by a percentage")  # "10/100% * $5"
            elif self.peek("lp") or self.peek("sqrt"):
                # Implicit product only after a closing parenthesis or a root: "(2)(3)", never "2(3)" (a
                # mixed number "2\frac{1}{2}" reads as 2((1)/(2)), which is not 2 * 1/2).
                if self.tokens[self.pos - 1].kind != "rp":
                    raise Unsupported("implicit product after a number")
                op = "*"
                rhs, rhs_is_pct = self.unary()
            else:
                return value, is_pct
            self.ops += 1
            last_op = op
            is_pct = is_pct and rhs_is_pct
            if op == "*":
                value = _check_size(value * rhs)
            else:
                if rhs == 0:
                    raise Unsupported("division by zero")
                value = _check_size(value / rhs)

    def unary(self) -> tuple[Fraction, bool]:
        if self.peek("op", "-") or self.peek("op", "+"):
            self.enter()
            sign = self.take().text
            value, is_pct = self.unary()
            self.depth -= 1
            return (-value if sign == "-" else value), is_pct
        return self.power()

    def power(self) -> tuple[Fraction, bool]:
        base, is_pct = self.postfix()
        if not self.peek("op", "^"):
            return base, is_pct
        self.take()
        self.ops += 1
        exponent, _ = self.unary()
        if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
            raise Unsupported("exponent not a small integer")
        power = int(exponent)
        if base == 0 and power < 0:
            raise Unsupported("division by zero")
        bits = max(base.numerator.bit_length(), base.denominator.bit_length())
        if bits * abs(power) > MAX_BITS:
            raise Unsupported("number too large")
        return Fraction(base) ** power, False

    def postfix(self) -> tuple[Fraction, bool]:
        value = self.atom()
        is_pct = False
        while self.peek("pct"):
            self.take()
            value, is_pct = value / 100, True
        return value, is_pct

    def atom(self) -> Fraction:
        if self.pos >= len(self.tokens):
            raise Unsupported("expression ends early")
        token = self.take()
        if token.kind == "num":
            digits = len(token.text) - ("." in token.text)
            if digits > MAX_DIGITS:
                raise Unsupported("number too long")
            if len(token.text) > 1 and token.text[0] == "0" and token.text[1].isdigit():
                raise Unsupported("leading zero (a time or a code, not a quantity)")
            return parse_decimal(token.text)
        if token.kind == "lp":
            self.enter()
            value = self.expr()
            if not self.peek("rp"):
                raise Unsupported("unbalanced parenthesis")
            self.take()
            self.depth -= 1
            return value
        if token.kind == "sqrt":
            radicand = self.atom()
            if radicand < 0:
                raise Unsupported("square root of a negative number")
            root = exact_sqrt(radicand)
            if root is None:
                raise Unsupported("irrational square root")
            self.ops += 1
            return root
        raise Unsupported(f"unexpected {token.text!r}")


def evaluate(tokens: Sequence[Token]) -> ExpressionValue:
    """The exact value of an expression's tokens (raises Unsupported when it is not closed arithmetic)."""
    if not tokens or len(tokens) > MAX_EXPR_TOKENS:
        raise Unsupported("empty or too long")
    parser = _ExpressionParser(tokens)
    value = parser.parse()
    numbers = [t for t in tokens if t.kind == "num"]
    has_pct = any(t.kind == "pct" for t in tokens)
    literal = parser.ops == 0 and len(numbers) == 1
    decimals, scale = 0, Fraction(1)
    if literal:
        text = numbers[0].text
        decimals = len(text.split(".")[1]) if "." in text else 0
        scale = Fraction(1, 100) if has_pct else Fraction(1)
    first = tokens[0]
    lead = parse_decimal(first.text) if first.kind == "num" and len(first.text) <= MAX_DIGITS else None
    return ExpressionValue(value, literal, decimals, scale, lead, parser.ops, has_pct)
