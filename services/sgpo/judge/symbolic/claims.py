"""Claim finding: every checkable `expression = value` (or `≈`) of a step, and whether it holds.

A claim is checked only when both sides are closed arithmetic (see the package docstring for what is
skipped and for the reader's tolerance); the words around an expression decide whether it stands alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from sgpo.common.exact import decimal_text, parse_decimal
from sgpo.judge.config import SymbolicBackend
from sgpo.judge.symbolic.expression import ExpressionValue, Unsupported, evaluate
from sgpo.judge.symbolic.latex import normalize
from sgpo.judge.symbolic.limits import MAX_STEP_CHARS
from sgpo.judge.symbolic.tokens import MATH_KINDS, Token, tokenize


def _words(text: str) -> list[str]:  # a word list written as one string
    return text.split()


# LaTeX commands that separate statements; any other command (\\cos, \\pi, \\binom, \\mod, \\log) is part of
# the expression next to it, which is then not closed arithmetic.
_SEPARATOR_COMMANDS = frozenset(
    _words(
        "\\implies \\Rightarrow \\rightarrow \\Longrightarrow \\longrightarrow \\iff \\Leftrightarrow \\therefore "
        "\\because \\to \\le \\leq \\ge \\geq \\lt \\gt \\ne \\neq \\equiv \\quad \\qquad \\and \\text \\hence "
        "\\mapsto \\boxed \\label \\tag \\end \\begin"
    )
)
_LEFT_KINDS = MATH_KINDS | {"of"}
# Punctuation that may stand right before or after a claim; any other symbol (–, @, |, ±, ∠...) may be an
# operator we do not read, so the claim is not closed arithmetic.
_SAFE_PUNCTUATION = frozenset(",;:.?!\"'“”‘’→⇒…")
# Names that a number labels ("Step 2 - 3 = ...", "Week 2 = 35 + 35"): the number is not a quantity.
_LABEL_WORDS = frozenset(
    _words(
        "step steps line lines equation eq paragraph part case figure fig problem question page chapter section "
        "item option stage phase week weeks day days month months year years round level grade row column table "
        "exercise example rule method approach"
    )
)
# Words right after a claim that say it does not hold ("1 = \\sqrt{9} + 4, which is not true").
_NEGATIONS = frozenset({"not", "false", "incorrect", "wrong", "isn't", "untrue", "impossible"})
# Words next to a claim that make it integer division, not a quotient ("9 / 7 = 1 with a remainder of 2").
_DIVISION_WORDS = frozenset({"remainder", "remainders", "quotient", "rem", "r"})
_DISCLAIMERS = _DIVISION_WORDS | _NEGATIONS
# A word right before an expression that makes it part of a bigger one ("20% of 50 = 10", "mod 5 + 1").
_CONTINUES_BEFORE = frozenset(
    _words(
        "of than by mod modulo times over per half twice double triple thrice quarter third thirds fourth "
        "fourths fifth fifths tenth tenths squared cubed root sqrt log ln sin cos tan exp choose divided "
        "multiplied plus minus from factorial power least most"
    )
)
# A word right after an expression that changes what it means ("= 1.5 million", "= 25 cents", "= 3 squared").
_CONTINUES_AFTER = frozenset(
    _words(
        "of times squared cubed hundred thousand million billion trillion dozen dozens score cents cent pence "
        "factorial percent thousandths hundredths tenths"
    )
)


@dataclass(frozen=True, slots=True)
class Claim:
    """One checked `lhs = rhs` (or `lhs ≈ rhs`) in a step; `ok` False is an arithmetic error."""

    lhs: str
    rhs: str
    approx: bool
    ok: bool
    exact: Fraction  # the left side's exact value
    note: str = ""  # how a tolerant reading accepted it ("rounded", "percentage", ...)

    def describe(self) -> str:
        rel = "≈" if self.approx else "="
        return f"'{self.lhs} {rel} {self.rhs}'"


def _agree(
    left: ExpressionValue, right: ExpressionValue, approx: bool, cfg: SymbolicBackend
) -> tuple[bool, str]:
    """Do the two sides agree, read the way a careful human grader would?"""
    if left.value == right.value:
        return True, ""
    if (left.has_pct or right.has_pct) and left.value in (right.value * 100, right.value / 100):
        return True, "percentage"  # "(5/20) * 100 = 25%", "1.2 x 100% = 120"
    for stated, computed in ((right, left), (left, right)):
        if not stated.literal:
            continue
        if approx:
            if stated.decimals:
                tolerance = Fraction(1, 10**stated.decimals) * stated.scale
            else:  # "≈ 3000": good to the last non-zero digit
                magnitude = abs(stated.value / stated.scale)
                zeros = 0
                while (
                    magnitude and magnitude.denominator == 1 and magnitude.numerator % 10 == 0 and zeros < 12
                ):
                    magnitude /= 10
                    zeros += 1
                tolerance = Fraction(10**zeros) * stated.scale
            gap = abs(computed.value - stated.value)
            if gap < tolerance or gap <= abs(computed.value) / 100:
                return True, "approximately"
            if (
                stated.scale != 1
                and abs(computed.value - stated.value / stated.scale) < tolerance / stated.scale
            ):
                return True, "approximately, as a percentage"
        elif cfg.accept_rounding and stated.decimals:
            tolerance = Fraction(1, 10**stated.decimals) * stated.scale
            if abs(computed.value - stated.value) < tolerance:
                return True, "rounded"
            if (
                stated.scale != 1
                and abs(computed.value - stated.value / stated.scale) < tolerance / stated.scale
            ):
                return True, "rounded, as a percentage"
    if right.ops and right.lead is not None and right.lead == left.value:
        return True, "running computation"  # "5 + 3 = 8 - 2 = 6"
    return False, ""


def _continues(token: Token, side: str) -> bool:
    """Does the word `token`, just before (side='before') or after an expression, make it part of a bigger one?"""
    if token.kind != "word":
        return False
    word = token.text
    if word.startswith("\\"):
        return word not in _SEPARATOR_COMMANDS
    if len(word) == 1 and word not in "aAI":  # a variable: "3 x", "r 2"
        return True
    return word.lower() in (_CONTINUES_BEFORE if side == "before" else _CONTINUES_AFTER)


def _left_run_ok(tokens: Sequence[Token], start: int, literal: bool) -> bool:
    """May the expression tokens[start:] (ending at an '=') stand alone, or is it cut from a bigger one?"""
    first = tokens[start]
    if first.kind in ("op", "pct", "rp", "unit", "of") and first.text != "-":
        return False
    if start == 0:
        return True
    previous = tokens[start - 1]
    if first.text == "-" and not (previous.kind == "other" and previous.text in ",;:"):
        return False  # "x - 5 = 3", "|S| - 3 * 8 = 14": the minus is binary
    if previous.kind == "word":
        if previous.end == first.start or _continues(previous, "before"):
            return False  # glued ("f(3)", "x-5") or continued ("20% of 50", "\\cos 60", "\\binom{3}{2}")
        if literal:
            return False  # a name's number: "Week 2 = 35 + 35", "Remaining 10 = 62,300/10"
        before = tokens[start - 2] if start >= 2 else None
        fraction = first.kind == "num" and len(tokens) > start + 1 and tokens[start + 1].text == "/"
        if previous.text.lower() == "and" and before is not None and before.kind == "num" and fraction:
            return False  # a mixed number: "12 x 1 and 1/4 = 15"
        if previous.text.lower() in _LABEL_WORDS and (before is None or before.kind != "num"):
            return False  # "from step 2 - 3 = ...": 2 names a step
        following = tokens[start + 1] if len(tokens) > start + 2 else None
        glued_minus = following is not None and following.text == "-" and following.start == first.end
        if first.kind == "num" and glued_minus and tokens[start + 2].start == following.end:  # type: ignore[union-attr]
            return False  # a range after a name: "Weeks 1-2 = 96 - 70"
    if previous.kind == "other" and previous.text not in _SAFE_PUNCTUATION:
        return False  # "[...] 50", "$2,430 – ($1,250 + $850)", "\\frac{7}{30}@\\frac{10}{21}"
    if previous.kind == "other" and previous.text in "!'." and previous.end == first.start:
        return False  # "0.\\overline{3}", "5!"
    return not any(
        t.kind == "word" and t.text.lower() in _DIVISION_WORDS for t in tokens[max(0, start - 6) : start]
    )


def _right_run_ok(tokens: Sequence[Token], end: int) -> bool:
    """May the expression tokens[:end] (starting after an '=') stand alone?"""
    last = tokens[end - 1]
    if last.kind in ("op", "lp", "sqrt"):
        return False
    for token in tokens[end : end + 8]:
        if token.kind == "word" and token.text.lower() in _DISCLAIMERS:
            return False  # "9 / 7 = 1 with a remainder of 2", "1 = 3 + 4, which is not true"
    if end == len(tokens):
        return True
    following = tokens[end]
    after = tokens[end + 1] if end + 1 < len(tokens) else None
    if following.kind == "of":
        return False  # "= 1/3 of $150"
    if following.kind == "word":
        if following.start == last.end or _continues(following, "after"):
            return False  # glued ("2x", "5th") or continued ("1.5 million", "2 \\pi", "= 3 x")
        if following.text.lower() in ("and", "per") and after is not None and after.kind in ("num", "lp"):
            return False  # a mixed number "5 and 2/3", "16 and (2/3)"; a rate "100 per 1%"
    if following.kind == "other":
        if following.text not in _SAFE_PUNCTUATION:
            return False  # "\\frac{1}{2} [\\cos ...]", "= 5–6 hours"
        glued_after = after is not None and (after.start == following.end or after.text.startswith("\\"))
        if following.start == last.end and (following.text in "!'" or glued_after):
            return False  # "5!", "0.\\overline{3}"
    return True


def _trails_off(tokens: Sequence[Token], end: int) -> bool:
    """ "= 0.333..." or "= 0.333…": the writer says the decimal goes on, so it is approximate."""
    tail = tokens[end : end + 3]
    return bool(tail) and (tail[0].text == "…" or (len(tail) == 3 and all(t.text == "." for t in tail)))


def _segments(tokens: list[Token]) -> list[tuple[int, int]]:
    """Token ranges between '=' signs."""
    bounds, start = [], 0
    for index, token in enumerate(tokens):
        if token.kind == "eq":
            bounds.append((start, index))
            start = index + 1
    bounds.append((start, len(tokens)))
    return bounds


def _units(tokens: Sequence[Token]) -> set[str]:
    return {t.text[1:-1] for t in tokens if t.kind == "unit" and len(t.text) > 2}


def _rounded_corners(tokens: Sequence[Token]) -> list[Fraction]:
    """Values of an expression when each long decimal in it (3+ places: a rounded value like 2.8284) moves to
    either end of its rounding interval; [] when it has none (or too many to try)."""
    rounded = [
        index
        for index, token in enumerate(tokens)
        if token.kind == "num" and "." in token.text and len(token.text.split(".")[1]) >= 3
    ]
    if not rounded or len(rounded) > 4:
        return []
    corners = []
    for mask in range(1 << len(rounded)):  # bit i set: the i-th rounded decimal moves up, else down
        moved = list(tokens)
        for bit, index in enumerate(rounded):
            token = tokens[index]
            half_width = Fraction(1, 10 ** len(token.text.split(".")[1]))
            corner = parse_decimal(token.text) + (half_width if mask >> bit & 1 else -half_width)
            if corner < 0:
                return []
            moved[index] = Token("num", decimal_text(corner), token.start, token.end)
        try:
            corners.append(evaluate(moved).value)
        except (Unsupported, ZeroDivisionError, OverflowError, ValueError):
            return []
    return corners


def find_claims(text: str, cfg: SymbolicBackend) -> list[Claim]:
    """Every checkable claim of a piece of text: those of the prose, then those of its GSM8K notes."""
    text = text[:MAX_STEP_CHARS]
    notes = _NOTE.findall(text)
    if notes:  # the prose without its notes, then each note ("48/2 = <<48/2=24>>24" has two claims)
        return [claim for piece in [_NOTE.sub(" ", text), *notes] for claim in _claims(piece, cfg)]
    return _claims(text, cfg)


_NOTE = re.compile(r"<<([^<>]{0,500})>>")


def _claims(text: str, cfg: SymbolicBackend) -> list[Claim]:
    if "=" not in text and not any(sign in text for sign in ("≈", "≃", "approx", "simeq")):
        return []  # no claim without an '=' or an '≈'
    claims: list[Claim] = []
    tokens = tokenize(normalize(text))
    segments = _segments(tokens)
    values: dict[tuple[int, int], ExpressionValue | None] = {}

    def value_of(start: int, end: int) -> ExpressionValue | None:
        if (start, end) not in values:
            math_tokens = [t for t in tokens[start:end] if t.kind != "unit"]
            try:
                values[(start, end)] = evaluate(math_tokens) if math_tokens else None
            except (Unsupported, ZeroDivisionError, OverflowError, ValueError, RecursionError):
                values[(start, end)] = None
        return values[(start, end)]

    for index in range(len(segments) - 1):
        segment_start, sign_at = segments[index]  # the '=' is tokens[sign_at]
        after_sign, segment_end = segments[index + 1]
        sign = tokens[sign_at]
        # The left side: the math tokens right before the '='; the right side: those right after it.
        lhs_start = sign_at
        while lhs_start > segment_start and tokens[lhs_start - 1].kind in _LEFT_KINDS:
            lhs_start -= 1
        rhs_end = after_sign
        while rhs_end < segment_end and tokens[rhs_end].kind in MATH_KINDS:
            rhs_end += 1
        if (
            rhs_end > after_sign + 1
            and tokens[rhs_end - 1].kind == "lp"
            and tokens[rhs_end - 1].start > tokens[rhs_end - 2].end
        ):
            rhs_end -= 1  # "= $14.99 (rounded)": a spaced parenthesis opens a remark, not a factor
        if lhs_start == sign_at or rhs_end == after_sign or not _right_run_ok(tokens, rhs_end):
            continue
        lhs_units, rhs_units = _units(tokens[lhs_start:sign_at]), _units(tokens[after_sign:rhs_end])
        if lhs_units and rhs_units and not rhs_units <= lhs_units:
            continue  # a unit conversion: "6 \\text{ inches} = \\frac{6}{12} \\text{ feet}"
        left, right = value_of(lhs_start, sign_at), value_of(after_sign, rhs_end)
        if left is None or right is None or (left.literal and right.literal):
            continue
        if not _left_run_ok(tokens, lhs_start, left.literal):
            continue
        approx = sign.text == "≈" or _trails_off(tokens, rhs_end)
        ok, note = _agree(left, right, approx, cfg)
        if not ok and cfg.accept_rounding:
            corners = _rounded_corners([t for t in tokens[lhs_start:sign_at] if t.kind != "unit"])
            if corners and min(corners) <= right.value <= max(corners):
                ok, note = True, "from rounded inputs"
        lhs = " ".join(
            "of" if t.kind == "of" else t.text for t in tokens[lhs_start:sign_at] if t.kind != "unit"
        )
        rhs = " ".join(t.text for t in tokens[after_sign:rhs_end] if t.kind != "unit")
        claims.append(Claim(_compact_spacing(lhs), _compact_spacing(rhs), approx, ok, left.value, note))
    return claims


def _compact_spacing(expr: str) -> str:
    """Token texts joined by spaces, without the spaces inside parentheses and before a %: "(2 + 3)%"."""
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", re.sub(r" %", "%", expr)))
