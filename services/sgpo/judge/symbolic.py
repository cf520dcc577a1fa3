"""The `symbolic` backend: checks every arithmetic claim `expression = value` of each step, exactly.

What it reads: integers, decimals, thousands separators (14,000), fractions (2/5, \\frac{2}{5}), percentages
(20%, 20 percent, 20\\% of 50), \\times \\cdot \\div x × ÷, powers, \\sqrt of perfect squares, `$` amounts,
LaTeX units in \\text{...}, GSM8K calculator notes <<a*b=c>>, chains `a = b = c`, and `≈` / \\approx.
Arithmetic is exact (`fractions.Fraction`), with bounded number sizes, exponents and nesting, so any input
finishes in time linear in its length.

It never guesses. A claim is checked only when both sides are closed arithmetic: an expression glued to a
variable or function (`2x`, `f(3)`, `x - 5`), cut by a word that continues it (`20% of 50`, `half of 8`,
`1.5 million`), or with a bare number on each side (`1 hour = 60 minutes`) is skipped. A step with no
checkable claim is not an error, so a response without arithmetic gets -1.

A reader's tolerance: `0.5` equals `1/2`; a decimal with d places within 10^-d of the exact value is accepted
(1/3 = 0.33, 2/3 = 0.67, 100/7 = 14.29); `≈` accepts rounding to the stated precision or within 1%;
a percentage equals its fraction (25/100 * 100 = 25%); `5 + 3 = 8 - 2 = 6` is read as a running
computation.

On top of the arithmetic, for the synthetic task's `Step k: a op b = c` format (see `SymbolicBackend`):
chain consistency (each step starts from the previous result) and alignment with a reference solution in
the same format (a copied wrong operand or a dropped step is an error even when the arithmetic is right).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

from sgpo.judge.config import SymbolicBackend
from sgpo.judge.types import Located

MAX_DIGITS = 40  # per number literal
MAX_BITS = 2048  # numerator / denominator size of any intermediate value
MAX_EXPONENT = 256
MAX_DEPTH = 48  # nesting of parentheses, unary signs and LaTeX groups
MAX_EXPR_TOKENS = 200
MAX_STEP_CHARS = 50_000  # longer steps are checked on their first MAX_STEP_CHARS characters


class Unsupported(Exception):
    """The expression is not closed arithmetic we can evaluate exactly: skip the claim, never guess."""


# ---------------------------------------------------------------------------------------------- normalizing

# A \text{...} whose words carry arithmetic must not vanish like a unit does ("2 \text{ thousand}").
_MEANINGFUL_WORDS = re.compile(
    r"\b(?:of|times|plus|minus|divided|multiplied|over|half|twice|double|triple|thrice|squared|cubed|"
    r"percent|hundred|thousand|million|billion|trillion|dozen|score|and|less|more|than|per|remainder|"
    r"quotient|remainders|rem)\b",
    re.IGNORECASE,
)
_TEXT_COMMANDS = {
    "text", "textbf", "textit", "textrm", "textsf", "texttt", "mathrm", "mathbf", "mathit", "mathsf",
    "mbox", "operatorname", "hbox", "emph", "textnormal",
}  # fmt: skip
_FRAC_COMMANDS = {"frac", "dfrac", "tfrac", "cfrac"}
_DROP_COMMANDS = {
    "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr",
    "displaystyle", "textstyle", "limits", "nolimits",
}  # fmt: skip
_SPACE_COMMANDS = {"quad", "qquad", "enspace", "thinspace", "medspace", "thickspace", "hfill", "newline"}
_SYMBOLS = {
    "times": " * ", "cdot": " * ", "ast": " * ", "div": " / ", "approx": " ≈ ", "simeq": " ≈ ",
    "thickapprox": " ≈ ", "approxeq": " ≈ ", "%": "%", "$": " ", ",": " ", ";": " ", ":": " ", "!": " ",
    " ": " ", "(": " ", ")": " ", "[": " ; ", "]": " ; ", "\\": " ; ", "{": " | ", "}": " | ", "&": " ",
    "#": " ", "_": " _ ",
}  # fmt: skip
_CMD = re.compile(r"\\([A-Za-z]+|.)", re.DOTALL)
_LATEX_SPECIAL = re.compile(r"[\\{}$&]")
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_LATEX_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,\\!)(?=\d{3})")  # 1{,}000 and 729,\!000
_DEGREES = re.compile(r"\^\s*(?:\{\s*\\circ\s*\}|\\circ)|°")
_BULLET = re.compile(r"^[ \t]*[-*+•][ \t]+", re.MULTILINE)
_MARKDOWN_BOLD = re.compile(r"\*\*|__")
_TIMES_X = re.compile(r"(?<=[\d)%])[ \t]+[xX][ \t]+(?=[\d(.$])")
_WORD_OPS = [
    (re.compile(r"(?<=[\d)%])\s+(?:multiplied\s+by|times)\s+(?=[\d(.$])", re.I), " * "),
    (re.compile(r"(?<=[\d)%])\s+divided\s+by\s+(?=[\d(.$])", re.I), " / "),
    (re.compile(r"(?<=[\d)%])\s+plus\s+(?=[\d(.$])", re.I), " + "),
    (re.compile(r"(?<=[\d)%])\s+minus\s+(?=[\d(.$])", re.I), " - "),
    # "20% of 50", "2/5 of 4000", "\frac{1}{3} of 18": a share of an amount.
    # Read as a product on the left of '=' only; on the right it ends the claim ("= 1/3 of $150").
    (re.compile(r"(?:(?<=%)|(?<=\d/\d)|(?<=\d\)\)))\s*of\s+(?=[\d(.$])", re.I), " ⊗ "),
]
_PERCENT_WORD = re.compile(r"(?<=\d)\s*(?:percent|per\s+cent)\b", re.I)
_ANNOTATION = re.compile(r"\(\s*LABEL\s*\)")  # "15 (\\text{light blue}) + 45": a remark, not a factor
_UNICODE = str.maketrans({"×": "*", "·": "*", "⋅": "*", "∙": "*", "✕": "*", "÷": "/", "−": "-", "≃": "≈"})


def _read_group(s: str, i: int) -> tuple[str, int] | None:
    """The argument of a LaTeX command at s[i:]: a {...} group (balanced) or one character."""
    while i < len(s) and s[i] in " \t":
        i += 1
    if i >= len(s):
        return None
    if s[i] != "{":
        return (s[i], i + 1) if s[i].isalnum() else None
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return s[i + 1 : j], j + 1
    return None


def _latex(s: str, depth: int = 0) -> str:
    """LaTeX to plain arithmetic: \\frac{a}{b} -> ((a)/(b)), \\sqrt{x} -> √(x), units dropped, groups -> ()."""
    if depth > MAX_DEPTH:
        return " \\toodeep "
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c not in "\\{}$&":  # copy plain text up to the next LaTeX special character in one go
            m = _LATEX_SPECIAL.search(s, i)
            j = m.start() if m else len(s)
            out.append(s[i:j])
            i = j
            continue
        if c == "\\":
            m = _CMD.match(s, i)
            if m is None:  # a lone backslash at the end
                out.append(" ")
                i += 1
                continue
            name, j = m.group(1), m.end()
            if name in _FRAC_COMMANDS:
                a = _read_group(s, j)
                b = _read_group(s, a[1]) if a else None
                if a is None or b is None:
                    out.append(" \\frac ")
                    i = j
                    continue
                out.append(f"(({_latex(a[0], depth + 1)})/({_latex(b[0], depth + 1)}))")
                i = b[1]
            elif name == "sqrt":
                if j < len(s) and s[j] == "[":  # n-th roots are not evaluated: skip index and radicand
                    close = s.find("]", j)
                    a = _read_group(s, close + 1) if close > 0 else None
                    out.append(" \\root ")
                    i = a[1] if a else j
                    continue
                a = _read_group(s, j)
                if a is None:
                    out.append(" \\sqrt ")
                    i = j
                    continue
                out.append(f"√({_latex(a[0], depth + 1)})")
                i = a[1]
            elif name in _TEXT_COMMANDS or name == "boxed":
                a = _read_group(s, j)
                if a is None:
                    out.append(f" \\{name} ")
                    i = j
                    continue
                out.append(_text_group(name, a[0], out, depth))
                i = a[1]
            elif name in _DROP_COMMANDS:
                i = j
            elif name in _SPACE_COMMANDS:
                out.append(" ")
                i = j
            elif name in _SYMBOLS:
                out.append(_SYMBOLS[name])
                i = j
            else:
                out.append(f" \\{name} " if name.isalpha() else " ")
                i = j
        elif c == "{":
            out.append("(")
            i += 1
        elif c == "}":
            out.append(")")
            i += 1
        elif c == "$" or c == "&":
            out.append(" ")
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _last_char(out: list[str]) -> str:
    for chunk in reversed(out):
        stripped = chunk.rstrip()
        if stripped:
            return stripped[-1]
    return ""


def _unit_name(words: str) -> str:
    """A unit's comparable name: its first word, singular ("pounds/book" -> "pound", "inches" -> "inch")."""
    m = re.search(r"[A-Za-z]+", words)
    if not m:
        return ""
    w = m.group().lower()
    if w.endswith(("ches", "shes", "xes", "sses")):
        return w[:-2]
    return w[:-1] if w.endswith("s") and not w.endswith("ss") and len(w) > 2 else w


def _text_group(name: str, inner: str, out: list[str], depth: int) -> str:
    """A \\text{...}-like group: its content (numbers), a unit (after a quantity), words, or a label."""
    if name == "boxed" or not re.search(r"[^\W\d_]", inner):
        return f" {_latex(inner, depth + 1)} "  # \\boxed{8}, \\mathbf{12}: the content counts
    if _MEANINGFUL_WORDS.search(inner):
        return " " + " ".join(re.findall(r"[^\W\d_]+", inner)) + " "  # words that carry arithmetic
    last = _last_char(out)
    if last and last in "0123456789)%":
        unit = _unit_name(inner)
        return f" ⟦{unit}⟧ " if unit else " "  # "8 \\text{ pounds}": a unit, compared across the '='
    return " LABEL "  # "\\text{Chenny's Age} - 4": a named quantity, not a number


def normalize(text: str) -> str:
    """Plain arithmetic notation for a step's text (see the module docstring); words stay words."""
    s = text[:MAX_STEP_CHARS].translate(_UNICODE)
    s = _BULLET.sub(" ", s)
    s = _MARKDOWN_BOLD.sub(" ", s)
    s = _DEGREES.sub(" ", s)
    s = _LATEX_THOUSANDS.sub(",", s)
    s = _latex(s)
    s = _ANNOTATION.sub(" ⟦⟧ ", s)
    s = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), s)
    s = _PERCENT_WORD.sub("%", s)
    s = _TIMES_X.sub(" * ", s)
    for pattern, repl in _WORD_OPS:
        s = pattern.sub(repl, s)
    return s


# ----------------------------------------------------------------------------------------------- tokenizing

_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d+)?|\.\d+)"
    r"|(?P<op>[+\-*/^])"
    r"|(?P<pct>%)"
    r"|(?P<lp>\()"
    r"|(?P<rp>\))"
    r"|(?P<eq>=+|≈)"
    r"|(?P<sqrt>√)"
    r"|(?P<unit>⟦[a-z]*⟧)"
    r"|(?P<of>⊗)"
    r"|(?P<word>\\[A-Za-z]+|[^\W\d_]\w*)"
    r"|(?P<other>\S)"
)
_MATH_KINDS = frozenset({"num", "op", "pct", "lp", "rp", "sqrt", "unit"})


def _words(text: str) -> list[str]:
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
_LEFT_KINDS = _MATH_KINDS | {"of"}
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


class Token(NamedTuple):  # a tuple: steps have thousands of tokens and this is the hot path
    kind: str
    text: str
    start: int
    end: int


def tokenize(s: str) -> list[Token]:
    return [Token(m.lastgroup or "other", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(s)]


# ---------------------------------------------------------------------------------------------- evaluating


@dataclass(frozen=True, slots=True)
class Value:
    """An evaluated expression, with what a tolerant reader needs to know about how it was written."""

    value: Fraction
    literal: bool  # a single number, possibly signed and/or with %
    decimals: int  # decimal places of that number (literals only)
    scale: Fraction  # 1/100 for a percentage literal, else 1
    lead: Fraction | None  # the expression's first number, when it starts with one
    ops: int  # binary operations in the expression
    has_pct: bool = False  # a % anywhere in it


@functools.lru_cache(maxsize=4096)
def _num(text: str) -> Fraction:
    """An exact Fraction from a decimal literal ("12", "3.50", ".5", "-4"); faster than Fraction(str)."""
    sign = -1 if text.startswith("-") else 1
    whole, _, frac = text.lstrip("+-").partition(".")
    return Fraction(sign * int((whole or "0") + frac), 10 ** len(frac))


def _check_size(x: Fraction) -> Fraction:
    if x.numerator.bit_length() > MAX_BITS or x.denominator.bit_length() > MAX_BITS:
        raise Unsupported("number too large")
    return x


class _Parser:
    """Recursive descent over one expression's tokens; raises Unsupported for anything else."""

    def __init__(self, toks: Sequence[Token]) -> None:
        self.toks, self.i, self.depth, self.ops = toks, 0, 0, 0
        self.pct_terms = 0

    def peek(self, kind: str, text: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        t = self.toks[self.i]
        return t.kind == kind and (text is None or t.text == text)

    def take(self) -> Token:
        t = self.toks[self.i]
        self.i += 1
        return t

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unsupported("nested too deeply")

    def parse(self) -> Fraction:
        v = self.expr()
        if self.i != len(self.toks):
            raise Unsupported(f"unexpected {self.toks[self.i].text!r}")
        return v

    def expr(self) -> Fraction:
        self.enter()
        terms_with_pct = 0
        v, had_pct = self.term()
        terms_with_pct += had_pct
        n_terms = 1
        while self.peek("op", "+") or self.peek("op", "-"):
            op = self.take().text
            w, had_pct = self.term()
            terms_with_pct += had_pct
            n_terms += 1
            self.ops += 1
            v = _check_size(v + w if op == "+" else v - w)
        if terms_with_pct and n_terms > 1:
            # "50 + 10%" means 55 in prose and 50.1 in arithmetic: ambiguous, so not checked.
            raise Unsupported("a percentage added to a number")
        self.depth -= 1
        return v

    def term(self) -> tuple[Fraction, bool]:
        v, pct = self.unary()
        last_op = ""
        while True:
            if self.peek("op", "*") or self.peek("op", "/") or self.peek("of"):
                op = self.take().text
                op = "*" if op == "⊗" else op
                if op == "/" and last_op == "/":
                    raise Unsupported("a / b / c")  # "3 / 1/4 = 12" means 3 ÷ ¼ to its writer
                w, pct2 = self.unary()
                if op == "/" and pct2:
                    raise Unsupported("divided by a percentage")  # "10/100% * $5"
            elif self.peek("lp") or self.peek("sqrt"):
                # Implicit product only after a closing parenthesis or a root: "(2)(3)", never "2(3)" (a
                # mixed number "2\frac{1}{2}" reads as 2((1)/(2)), which is not 2 * 1/2).
                prev = self.toks[self.i - 1]
                if prev.kind != "rp":
                    raise Unsupported("implicit product after a number")
                op = "*"
                w, pct2 = self.unary()
            else:
                return v, pct
            self.ops += 1
            last_op = op
            pct = pct and pct2
            if op == "*":
                v = _check_size(v * w)
            else:
                if w == 0:
                    raise Unsupported("division by zero")
                v = _check_size(v / w)

    def unary(self) -> tuple[Fraction, bool]:
        if self.peek("op", "-") or self.peek("op", "+"):
            self.enter()
            sign = self.take().text
            v, pct = self.unary()
            self.depth -= 1
            return (-v if sign == "-" else v), pct
        return self.power()

    def power(self) -> tuple[Fraction, bool]:
        base, pct = self.postfix()
        if not self.peek("op", "^"):
            return base, pct
        self.take()
        self.ops += 1
        exp, _ = self.unary()
        if exp.denominator != 1 or abs(exp) > MAX_EXPONENT:
            raise Unsupported("exponent not a small integer")
        e = int(exp)
        if base == 0 and e < 0:
            raise Unsupported("division by zero")
        size = max(base.numerator.bit_length(), base.denominator.bit_length())
        if size * abs(e) > MAX_BITS:
            raise Unsupported("number too large")
        return Fraction(base) ** e, False

    def postfix(self) -> tuple[Fraction, bool]:
        v = self.atom()
        pct = False
        while self.peek("pct"):
            self.take()
            v, pct = v / 100, True
        return v, pct

    def atom(self) -> Fraction:
        if self.i >= len(self.toks):
            raise Unsupported("expression ends early")
        t = self.take()
        if t.kind == "num":
            digits = len(t.text) - ("." in t.text)
            if digits > MAX_DIGITS:
                raise Unsupported("number too long")
            if len(t.text) > 1 and t.text[0] == "0" and t.text[1].isdigit():
                raise Unsupported("leading zero (a time or a code, not a quantity)")
            return _num(t.text)
        if t.kind == "lp":
            self.enter()
            v = self.expr()
            if not self.peek("rp"):
                raise Unsupported("unbalanced parenthesis")
            self.take()
            self.depth -= 1
            return v
        if t.kind == "sqrt":
            v = self.atom()
            if v < 0:
                raise Unsupported("square root of a negative number")
            n, d = math.isqrt(v.numerator), math.isqrt(v.denominator)
            if n * n != v.numerator or d * d != v.denominator:
                raise Unsupported("irrational square root")
            self.ops += 1
            return Fraction(n, d)
        raise Unsupported(f"unexpected {t.text!r}")


def evaluate(toks: Sequence[Token]) -> Value:
    """The exact value of an expression's tokens (raises Unsupported when it is not closed arithmetic)."""
    if not toks or len(toks) > MAX_EXPR_TOKENS:
        raise Unsupported("empty or too long")
    p = _Parser(toks)
    v = p.parse()
    nums = [t for t in toks if t.kind == "num"]
    literal = p.ops == 0 and len(nums) == 1
    decimals, scale = 0, Fraction(1)
    if literal:
        text = nums[0].text
        decimals = len(text.split(".")[1]) if "." in text else 0
        scale = Fraction(1, 100) if any(t.kind == "pct" for t in toks) else Fraction(1)
    lead = _num(toks[0].text) if toks[0].kind == "num" and len(toks[0].text) <= MAX_DIGITS else None
    return Value(v, literal, decimals, scale, lead, p.ops, any(t.kind == "pct" for t in toks))


# ------------------------------------------------------------------------------------------------- claims


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


def _fmt(x: Fraction) -> str:
    if x.denominator == 1:
        return str(x.numerator)
    d = x.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1 and x.denominator < 10**12:  # a terminating decimal
        places = 0
        while (x * 10**places).denominator != 1:
            places += 1
        return f"{float(x):.{places}f}" if places <= 12 else f"{x.numerator}/{x.denominator}"
    return f"{x.numerator}/{x.denominator} (≈ {float(x):.6g})"


def _agree(left: Value, right: Value, approx: bool, cfg: SymbolicBackend) -> tuple[bool, str]:
    """Do the two sides agree, read the way a careful human grader would?"""
    if left.value == right.value:
        return True, ""
    if (left.has_pct or right.has_pct) and left.value in (right.value * 100, right.value / 100):
        return True, "percentage"  # "(5/20) * 100 = 25%", "1.2 x 100% = 120"
    for lit, other in ((right, left), (left, right)):
        if not lit.literal:
            continue
        if approx:
            if lit.decimals:
                tol = Fraction(1, 10**lit.decimals) * lit.scale
            else:
                num = abs(lit.value / lit.scale)
                zeros = 0
                while num and num.denominator == 1 and num.numerator % 10 == 0 and zeros < 12:
                    num /= 10
                    zeros += 1
                tol = Fraction(10**zeros) * lit.scale
            if abs(other.value - lit.value) < tol or abs(other.value - lit.value) <= abs(other.value) / 100:
                return True, "approximately"
            if lit.scale != 1 and abs(other.value - lit.value / lit.scale) < tol / lit.scale:
                return True, "approximately, as a percentage"
        elif cfg.accept_rounding and lit.decimals:
            tol = Fraction(1, 10**lit.decimals) * lit.scale
            if abs(other.value - lit.value) < tol:
                return True, "rounded"
            if lit.scale != 1 and abs(other.value - lit.value / lit.scale) < tol / lit.scale:
                return True, "rounded, as a percentage"
    if right.ops and right.lead is not None and right.lead == left.value:
        return True, "running computation"  # "5 + 3 = 8 - 2 = 6"
    return False, ""


def _continues(t: Token, side: str) -> bool:
    """Does the word `t`, just before (side='before') or after an expression, make it part of a bigger one?"""
    if t.kind != "word":
        return False
    w = t.text
    if w.startswith("\\"):
        return w not in _SEPARATOR_COMMANDS
    lw = w.lower()
    if len(w) == 1 and w not in "aAI":  # a variable: "3 x", "r 2"
        return True
    return lw in (_CONTINUES_BEFORE if side == "before" else _CONTINUES_AFTER)


def _left_run_ok(toks: Sequence[Token], start: int, literal: bool) -> bool:
    """May the expression toks[start:] (ending at an '=') stand alone, or is it cut from a bigger one?"""
    first = toks[start]
    if first.kind in ("op", "pct", "rp", "unit", "of") and first.text != "-":
        return False
    if start == 0:
        return True
    prev = toks[start - 1]
    if first.text == "-" and not (prev.kind == "other" and prev.text in ",;:"):
        return False  # "x - 5 = 3", "|S| - 3 * 8 = 14": the minus is binary
    if prev.kind == "word":
        if prev.end == first.start or _continues(prev, "before"):
            return False  # glued ("f(3)", "x-5") or continued ("20% of 50", "\\cos 60", "\\binom{3}{2}")
        if literal:
            return False  # a name's number: "Week 2 = 35 + 35", "Remaining 10 = 62,300/10"
        before = toks[start - 2] if start >= 2 else None
        fraction = first.kind == "num" and len(toks) > start + 1 and toks[start + 1].text == "/"
        if prev.text.lower() == "and" and before is not None and before.kind == "num" and fraction:
            return False  # a mixed number: "12 x 1 and 1/4 = 15"
        if prev.text.lower() in _LABEL_WORDS and (before is None or before.kind != "num"):
            return False  # "from step 2 - 3 = ...": 2 names a step
        nxt = toks[start + 1] if len(toks) > start + 2 else None
        glued_minus = nxt is not None and nxt.text == "-" and nxt.start == first.end
        if first.kind == "num" and glued_minus and toks[start + 2].start == nxt.end:  # type: ignore[union-attr]
            return False  # a range after a name: "Weeks 1-2 = 96 - 70"
    if prev.kind == "other" and prev.text not in _SAFE_PUNCTUATION:
        return False  # "[...] 50", "$2,430 – ($1,250 + $850)", "\\frac{7}{30}@\\frac{10}{21}"
    if prev.kind == "other" and prev.text in "!'." and prev.end == first.start:
        return False  # "0.\\overline{3}", "5!"
    return not any(
        t.kind == "word" and t.text.lower() in _DIVISION_WORDS for t in toks[max(0, start - 6) : start]
    )


def _right_run_ok(toks: Sequence[Token], end: int) -> bool:
    """May the expression toks[:end] (starting after an '=') stand alone?"""
    last = toks[end - 1]
    if last.kind in ("op", "lp", "sqrt"):
        return False
    for t in toks[end : end + 8]:
        if t.kind == "word" and t.text.lower() in _DISCLAIMERS:
            return False  # "9 / 7 = 1 with a remainder of 2", "1 = 3 + 4, which is not true"
    if end == len(toks):
        return True
    nxt = toks[end]
    after = toks[end + 1] if end + 1 < len(toks) else None
    if nxt.kind == "of":
        return False  # "= 1/3 of $150"
    if nxt.kind == "word":
        if nxt.start == last.end or _continues(nxt, "after"):
            return False  # glued ("2x", "5th") or continued ("1.5 million", "2 \\pi", "= 3 x")
        if nxt.text.lower() in ("and", "per") and after is not None and after.kind in ("num", "lp"):
            return False  # a mixed number "5 and 2/3", "16 and (2/3)"; a rate "100 per 1%"
    if nxt.kind == "other":
        if nxt.text not in _SAFE_PUNCTUATION:
            return False  # "\\frac{1}{2} [\\cos ...]", "= 5–6 hours"
        glued_after = after is not None and (after.start == nxt.end or after.text.startswith("\\"))
        if nxt.start == last.end and (nxt.text in "!'" or glued_after):
            return False  # "5!", "0.\\overline{3}"
    return True


def _trails_off(toks: Sequence[Token], end: int) -> bool:
    """ "= 0.333..." or "= 0.333…": the writer says the decimal goes on, so it is approximate."""
    nxt = toks[end : end + 3]
    return bool(nxt) and (nxt[0].text == "…" or (len(nxt) == 3 and all(t.text == "." for t in nxt)))


def _segments(toks: list[Token]) -> list[tuple[int, int]]:
    """Token ranges between '=' signs."""
    bounds, start = [], 0
    for k, t in enumerate(toks):
        if t.kind == "eq":
            bounds.append((start, k))
            start = k + 1
    bounds.append((start, len(toks)))
    return bounds


def _units(toks: Sequence[Token]) -> set[str]:
    return {t.text[1:-1] for t in toks if t.kind == "unit" and len(t.text) > 2}


def _rounded_corners(toks: Sequence[Token]) -> list[Fraction]:
    """Values of an expression when each long decimal in it (3+ places: a rounded value like 2.8284) moves to
    either end of its rounding interval; [] when it has none (or too many to try)."""
    idx = [
        k for k, t in enumerate(toks) if t.kind == "num" and "." in t.text and len(t.text.split(".")[1]) >= 3
    ]
    if not idx or len(idx) > 4:
        return []
    out = []
    for mask in range(1 << len(idx)):
        moved = list(toks)
        for bit, k in enumerate(idx):
            t = toks[k]
            delta = Fraction(1, 10 ** len(t.text.split(".")[1]))
            v = _num(t.text) + (delta if mask >> bit & 1 else -delta)
            if v < 0:
                return []
            moved[k] = Token("num", _decimal_text(v), t.start, t.end)
        try:
            out.append(evaluate(moved).value)
        except (Unsupported, ZeroDivisionError, OverflowError, ValueError):
            return []
    return out


def _decimal_text(v: Fraction) -> str:
    places = 0
    while (v * 10**places).denominator != 1 and places < MAX_DIGITS:
        places += 1
    digits = str(abs(v.numerator * 10**places // v.denominator)).rjust(places + 1, "0")
    return (digits[:-places] + "." + digits[-places:]) if places else digits


def find_claims(text: str, cfg: SymbolicBackend) -> list[Claim]:
    """Every checkable claim of a piece of text: those of the prose, then those of its GSM8K notes."""
    text = text[:MAX_STEP_CHARS]
    notes = _NOTE.findall(text)
    if notes:  # the prose without its notes, then each note ("48/2 = <<48/2=24>>24" has two claims)
        return [c for piece in [_NOTE.sub(" ", text), *notes] for c in _claims(piece, cfg)]
    return _claims(text, cfg)


_NOTE = re.compile(r"<<([^<>]{0,500})>>")


def _claims(text: str, cfg: SymbolicBackend) -> list[Claim]:
    if "=" not in text and not any(a in text for a in ("≈", "≃", "approx", "simeq")):
        return []  # no claim without an '=' or an '≈'
    claims: list[Claim] = []
    s = normalize(text)
    toks = tokenize(s)
    segs = _segments(toks)
    values: dict[tuple[int, int], Value | None] = {}

    def value_of(a: int, b: int) -> Value | None:
        if (a, b) not in values:
            math_toks = [t for t in toks[a:b] if t.kind != "unit"]
            try:
                values[(a, b)] = evaluate(math_toks) if math_toks else None
            except (Unsupported, ZeroDivisionError, OverflowError, ValueError, RecursionError):
                values[(a, b)] = None
        return values[(a, b)]

    for k in range(len(segs) - 1):
        la, lb = segs[k]
        ra, rb = segs[k + 1]
        eq = toks[lb]
        # The left side: the math tokens right before the '='; the right side: those right after it.
        a = lb
        while a > la and toks[a - 1].kind in _LEFT_KINDS:
            a -= 1
        b = ra
        while b < rb and toks[b].kind in _MATH_KINDS:
            b += 1
        if b > ra + 1 and toks[b - 1].kind == "lp" and toks[b - 1].start > toks[b - 2].end:
            b -= 1  # "= $14.99 (rounded)": a spaced parenthesis opens a remark, not a factor
        if a == lb or b == ra or not _right_run_ok(toks, b):
            continue
        lu, ru = _units(toks[a:lb]), _units(toks[ra:b])
        if lu and ru and not ru <= lu:
            continue  # a unit conversion: "6 \\text{ inches} = \\frac{6}{12} \\text{ feet}"
        left, right = value_of(a, lb), value_of(ra, b)
        if left is None or right is None or (left.literal and right.literal):
            continue
        if not _left_run_ok(toks, a, left.literal):
            continue
        approx = eq.text == "≈" or _trails_off(toks, b)
        ok, note = _agree(left, right, approx, cfg)
        if not ok and cfg.accept_rounding:
            corners = _rounded_corners([t for t in toks[a:lb] if t.kind != "unit"])
            if corners and min(corners) <= right.value <= max(corners):
                ok, note = True, "from rounded inputs"
        lhs = " ".join("of" if t.kind == "of" else t.text for t in toks[a:lb] if t.kind != "unit")
        rhs = " ".join(t.text for t in toks[ra:b] if t.kind != "unit")
        claims.append(Claim(_tidy(lhs), _tidy(rhs), approx, ok, left.value, note))
    return claims


def _tidy(expr: str) -> str:
    return re.sub(r"\( ", "(", re.sub(r" \)", ")", re.sub(r" %", "%", expr)))


# -------------------------------------------------------------------------------------- the synthetic format

_NUM = r"-?\d+(?:\.\d+)?"
_HEADER = re.compile(r"^\s*(?:\*\*)?(?:#+\s*)?step\s*\d+\s*(?:\*\*)?\s*[:.)\-]\s*(?:\*\*)?\s*", re.I)
_CHAIN_STEP = re.compile(rf"^\s*({_NUM})\s*([-+*/×x÷·])\s*({_NUM})\s*=\s*({_NUM})\s*\.?\s*$")
_ANSWER_STEP = re.compile(
    rf"^\s*(?:\*\*)?(?:(?:the\s+)?(?:final\s+)?answer(?:\s+is)?\s*[:=]?|####)\s*(?:\*\*)?\s*"
    rf"(?:\$?\\boxed\{{\s*)?({_NUM})\s*\}}?\$?\s*\.?\s*$",
    re.I,
)
_OP_NAMES = {"×": "*", "x": "*", "·": "*", "÷": "/"}


@dataclass(frozen=True, slots=True)
class ChainStep:
    a: Fraction
    op: str
    b: Fraction
    c: Fraction


@dataclass(frozen=True, slots=True)
class AnswerStep:
    value: Fraction


def parse_format_step(text: str, need_header: bool = True) -> ChainStep | AnswerStep | None:
    """`Step k: a op b = c` or `Answer: N` (the synthetic task's format), else None.

    Without `need_header`, a bare `a op b = c` counts too (when a reference fixes the format, the header adds
    nothing; without one, bare equations may be independent computations, not a chain).
    """
    m = _ANSWER_STEP.match(text)
    if m:
        return AnswerStep(_num(m.group(1)))
    header = _HEADER.match(text)
    if header is None and need_header:
        return None
    m = _CHAIN_STEP.match(text[header.end() :] if header else text)
    if m:
        op = _OP_NAMES.get(m.group(2), m.group(2))
        return ChainStep(_num(m.group(1)), op, _num(m.group(3)), _num(m.group(4)))
    return None


def parse_chain(steps: Sequence[str], need_header: bool = True) -> list[ChainStep | AnswerStep | None]:
    return [parse_format_step(s, need_header) for s in steps]


def is_chain_format(parsed: Sequence[ChainStep | AnswerStep | None]) -> bool:
    """Only `a op b = c` steps, at least one, and at most a final answer line."""
    if not parsed or any(p is None for p in parsed):
        return False
    if not isinstance(parsed[0], ChainStep):
        return False
    return all(isinstance(p, ChainStep) for p in parsed[:-1])


def _same_operation(x: ChainStep, y: ChainStep) -> bool:
    if x.op != y.op:
        return False
    if (x.a, x.b) == (y.a, y.b):
        return True
    return x.op in "+*" and (x.a, x.b) == (y.b, y.a)


def _show(p: ChainStep | AnswerStep) -> str:
    if isinstance(p, AnswerStep):
        return f"Answer: {_fmt(p.value)}"
    return f"{_fmt(p.a)} {p.op} {_fmt(p.b)} = {_fmt(p.c)}"


def chain_error(parsed: Sequence[ChainStep | AnswerStep | None]) -> tuple[int, str] | None:
    """First step that does not continue from the previous step's result (chain format only)."""
    for k in range(1, len(parsed)):
        prev, cur = parsed[k - 1], parsed[k]
        if not isinstance(prev, ChainStep):
            continue
        if isinstance(cur, ChainStep):
            starts = cur.a == prev.c or (cur.op in "+*" and cur.b == prev.c)
            if not starts:
                return k, (
                    f"step {k} ('{_show(cur)}') does not start from the previous step's result {_fmt(prev.c)}"
                )
        elif isinstance(cur, AnswerStep) and cur.value != prev.c:
            return k, f"step {k} answers {_fmt(cur.value)} but the previous step ended at {_fmt(prev.c)}"
    return None


def reference_error(
    parsed: Sequence[ChainStep | AnswerStep | None], ref: Sequence[ChainStep | AnswerStep | None]
) -> tuple[int, str] | None:
    """First step that departs from a chain-format reference solution, by position."""
    for k, p in enumerate(parsed):
        r = ref[k] if k < len(ref) else None
        if r is None:
            return k, f"step {k} goes beyond the reference solution's {len(ref)} steps"
        if p is None:
            return k, f"step {k} is not an 'a op b = c' step; the reference does '{_show(r)}'"
        if isinstance(r, ChainStep):
            if isinstance(p, AnswerStep):
                return k, f"step {k} answers early; the reference still does '{_show(r)}'"
            if not _same_operation(p, r):
                return k, f"step {k} does '{_show(p)}' where the reference does '{_show(r)}'"
        elif isinstance(p, ChainStep):
            return k, f"step {k} ('{_show(p)}') goes on after the reference's answer"
        elif p.value != r.value:
            return k, f"step {k} answers {_fmt(p.value)}; the reference answers {_fmt(r.value)}"
    return None


# ------------------------------------------------------------------------------------------------- backend


@dataclass(frozen=True, slots=True)
class SymbolicResult:
    first_error_step: int  # -1: no false claim found
    reason: str
    claims_checked: int


def parse_reference(reference_solution: str) -> list[ChainStep | AnswerStep | None]:
    """The reference solution's steps in the synthetic format; [] when it is not in that format."""
    if not reference_solution.strip():
        return []
    from sgpo.core import split_steps

    parsed = parse_chain([s.text for s in split_steps(reference_solution)])
    return parsed if is_chain_format(parsed) else []


def check_steps(
    steps: Sequence[str], cfg: SymbolicBackend, reference: Sequence[ChainStep | AnswerStep | None] = ()
) -> SymbolicResult:
    """The first step with a false arithmetic claim (or, in chain format, a broken chain / reference).

    `reference` is `parse_reference(reference_solution)`, used when `cfg.reference_check` is on.
    """
    n_claims = 0
    first: tuple[int, str] | None = None
    for k, step in enumerate(steps):
        claims = find_claims(step, cfg)
        n_claims += len(claims)
        bad = next((c for c in claims if not c.ok), None)
        if bad is not None:
            first = (k, f"step {k}: {bad.describe()} is false; the left side is {_fmt(bad.exact)}")
            break
    if cfg.chain_check or (cfg.reference_check and reference):
        extra: tuple[int, str] | None = None
        if cfg.reference_check and reference:
            extra = reference_error(parse_chain(steps, need_header=False), reference)
        elif cfg.chain_check and is_chain_format(parsed := parse_chain(steps)):
            extra = chain_error(parsed)
        if extra is not None and (first is None or extra[0] < first[0]):
            first = extra
    if first is not None:
        return SymbolicResult(first[0], first[1], n_claims)
    if n_claims == 0:
        return SymbolicResult(-1, "no checkable arithmetic claim in any step; no error located", 0)
    return SymbolicResult(-1, f"all {n_claims} arithmetic claims hold; no error located", n_claims)


class SymbolicLocator:
    """The `symbolic` backend behind the judge: deterministic, CPU, no I/O, thread-safe."""

    name = "symbolic"

    def __init__(self, cfg: SymbolicBackend) -> None:
        self.cfg = cfg

    def locate(
        self, problem: str, reference_solution: str, step_lists: Sequence[Sequence[str]]
    ) -> list[Located]:
        reference = parse_reference(reference_solution) if self.cfg.reference_check else []
        out = []
        for steps in step_lists:
            r = check_steps(steps, self.cfg, reference)
            out.append(Located(r.first_error_step, r.reason, claims_checked=r.claims_checked))
        return out

    def close(self) -> None:
        pass
