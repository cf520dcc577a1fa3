"""Answer extraction, normalization and the fast path: pure string work that never needs sympy.

Everything here runs in the caller's process (the gRPC handler threads, the orchestrator), so every
pattern is linear in the input: braces are matched with one stack pass, no regex can backtrack
catastrophically, and only the last `scan_chars` characters of a response are read.

Extraction order on a response: the last `\\boxed{}` / `\\fbox{}` (with the boxes written right
before it, as in `\\boxed{1}, \\boxed{2}`), then the last of `#### N`, an `Answer: ...` line (or
GSM8K's closing `A: N` line) and "the (final) answer is ..."; then the configured fallback.
`decide_fast` settles plain numbers, multiple-choice letters and identical strings; everything
else goes to math-verify in a worker process (`sgpo.verifier.equivalence`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from sgpo.common.exact import Huge, Unknown, Value, evaluate
from sgpo.core.types import VerdictStatus

ExtractMethod = Literal["boxed", "hashes", "answer_line", "answer_is", "last_number", "whole"]
Fallback = Literal["math_verify", "last_number", "none"]

# Gaps allowed between boxes that form one answer ("\boxed{1}, \boxed{2}", "x=\boxed{1}, y=\boxed{2}").
_MAX_BOX_GAP = 60
# An answer after a marker is read from at most this many characters (keeps the lazy patterns linear).
_MAX_MARKER_CHARS = 4000
# A response with no marker that is this short, with no prose, is taken whole as the answer.
_MAX_BARE_CHARS = 300


@dataclass(frozen=True, slots=True)
class Extraction:
    """The answer found in a text and how it was found."""

    answer: str
    method: ExtractMethod
    raw: bool = False
    """The answer is a sentence: math-verify's own extraction reads it instead of parsing it whole."""


# ---------------------------------------------------------------- extraction

_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])[ \t]*")
_BOX_BARE_ARG = re.compile(r"[^\s${}\\]+")
_HASHES = re.compile(r"^[ \t]*####[ \t]*(?P<ans>[-+−]?[ \t]*\\?\$?[ \t]*[\d.][^\n]*)$", re.MULTILINE)
_ANSWER_LINE = re.compile(
    r"^[ \t>*_#-]*(?:final[ \t]+)?answer[ \t*_]*[:：][ \t*_]*(?P<ans>[^\n]*)$", re.IGNORECASE | re.MULTILINE
)
_GSM8K_A_LINE = re.compile(r"^A:[ \t]*(?P<ans>\S[^\n]*)$")
_ANSWER_IS = re.compile(
    r"\b(?:final[ \t]+)?answer[ \t]+(?:is|would[ \t]+be|will[ \t]+be|=)[ \t]*:?[ \t]*(?P<ans>[^\n]+)",
    re.IGNORECASE,
)
_LEADING_ANSWER_IS = re.compile(
    r"^(?:the[ \t]+)?(?:final[ \t]+)?answer[ \t]+(?:is|=)[ \t]*:?[ \t]*", re.IGNORECASE
)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\s+I hope\b|[;!?](?=\s|$)")
_LATEX_ENV = re.compile(
    r"\$\$(?P<a>[^$]+?)\$\$|(?<!\\)\$(?P<b>[^$]+?)(?<!\\)\$|\\\((?P<c>.+?)\\\)|\\\[(?P<d>.+?)\\\]", re.DOTALL
)
_NUMBER_TOKEN = re.compile(
    r"(?<![\w.])[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\w])|(?<![\w.])[-+−]?\.\d+(?![\w])"
)
_MATHY = re.compile(r"[\d\\]")
_CONTENT = re.compile(r"[^\W_]|\\")  # a letter, a digit or a LaTeX command: something to read
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]|\n\s*\n")


# Invisible format characters (zero-width spaces, bidi marks, BOM) are dropped; full-width ASCII
# ("３６") becomes ASCII. Not NFKC: that would turn "x²" into "x2".
_CHAR_MAP: dict[int, int | None] = {
    c: None for c in (*range(0x200B, 0x2010), *range(0x202A, 0x202F), *range(0x2060, 0x2065), 0xFEFF)
}
_CHAR_MAP.update({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)})
_CHAR_MAP[0x3000] = 0x20
_CHAR_MAP[0x2212] = 0x2D  # − minus sign


def normalize_chars(s: str) -> str:
    return s.translate(_CHAR_MAP)


def _brace_pairs(s: str) -> dict[int, int]:
    """Index of each `{` -> index of its matching `}` (escaped `\\{` `\\}` ignored); one linear pass."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in _BRACE_TOKEN.finditer(s):
        t = m.group()
        if t == "{":
            stack.append(m.start())
        elif t == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def find_boxes(s: str) -> list[tuple[int, int, str]]:
    """Every well-formed `\\boxed{...}` / `\\fbox{...}` / `\\boxed 5` as (start, end, content), in order."""
    if "\\boxed" not in s and "\\fbox" not in s:
        return []
    pairs = _brace_pairs(s)
    boxes: list[tuple[int, int, str]] = []
    for m in _BOX.finditer(s):
        arg = m.end()
        if arg < len(s) and s[arg] == "{":
            close = pairs.get(arg)
            if close is not None:
                boxes.append((m.start(), close + 1, s[arg + 1 : close]))
        else:
            bare = _BOX_BARE_ARG.match(s, arg)
            if bare is not None:
                boxes.append((m.start(), bare.end(), bare.group()))
    return boxes


def last_boxed(s: str) -> str | None:
    """Content of the last box, joined with the boxes right before it ("1, 2" for `\\boxed{1}, \\boxed{2}`)."""
    span = last_boxed_span(s)
    return None if span is None else span[1]


def last_boxed_span(s: str) -> tuple[int, str] | None:
    """(start of the first joined box, joined content) of `last_boxed`."""
    boxes = find_boxes(s)
    if not boxes:
        return None
    # The box that ends last; among boxes ending at the same place, the outermost.
    last = max(boxes, key=lambda b: (b[1], -b[0]))
    chosen = [last]
    for box in reversed(boxes):
        head = chosen[0]
        if box[1] > head[0]:
            continue  # nested in or overlapping the chosen ones
        gap = s[box[1] : head[0]]
        if len(gap) > _MAX_BOX_GAP or _SENTENCE_BREAK.search(gap):
            break
        chosen.insert(0, box)
    return chosen[0][0], ", ".join(b[2].strip() for b in chosen)


def _trim_sentence(ans: str) -> str:
    m = _SENTENCE_END.search(ans)
    if m is not None:
        ans = ans[: m.start()]
    return ans.strip()


def _prose_words(ans: str) -> list[str]:
    """Words outside math environments and LaTeX commands."""
    prose = _LATEX_ENV.sub(" ", ans) if "$" in ans or "\\" in ans else ans
    return _WORD.findall(prose)


def _is_wordy(ans: str) -> bool:
    """A sentence rather than an answer: "The largest $n$ is 34"."""
    words = _prose_words(ans)
    return len(words) >= 3 or any(w.lower() == "is" for w in words)


def _has_delimiters(s: str) -> bool:
    return "$" in s.replace("\\$", "") or "\\(" in s or "\\[" in s


def _candidates(s: str) -> list[tuple[int, str, ExtractMethod]]:
    """Every answer marker's last occurrence as (position, raw answer text, method)."""
    found: list[tuple[int, str, ExtractMethod]] = []
    boxes = last_boxed_span(s)
    if boxes is not None:
        found.append((boxes[0], boxes[1], "boxed"))
    for pattern, method in ((_HASHES, "hashes"), (_ANSWER_LINE, "answer_line"), (_ANSWER_IS, "answer_is")):
        last = None
        for last in pattern.finditer(s):  # noqa: B007 - we want the last match
            pass
        if last is not None:
            found.append((last.start("ans"), last.group("ans"), method))  # type: ignore[arg-type]
    stripped = s.rstrip()
    last_line = stripped[stripped.rfind("\n") + 1 :]
    gsm = _GSM8K_A_LINE.match(last_line)
    if gsm is not None:
        found.append((len(stripped) - len(last_line), gsm.group("ans"), "answer_line"))
    return sorted(found, key=lambda f: f[0], reverse=True)


def _marker_text(raw: str) -> tuple[str, bool]:
    """(answer, raw): the answer after a marker, or the marker's sentence for math-verify to read."""
    ans = _LEADING_ANSWER_IS.sub("", raw[:_MAX_MARKER_CHARS].strip().strip("*_").strip())
    boxed = last_boxed(ans)
    if boxed is not None:
        return boxed.strip(), False
    ans = _trim_sentence(ans).replace('\\"', '"').strip("\"'`").strip()
    envs = list(_LATEX_ENV.finditer(ans))
    if len(envs) == 1 and envs[0].start() == 0:  # "$\frac12$, which is half" -> "\frac12"
        return next(g for g in envs[0].groups() if g is not None).strip(), False
    return ans, len(envs) > 1 or _is_wordy(ans)


def extract_answer(
    text: str, fallback: Fallback = "math_verify", scan_chars: int = 50_000
) -> Extraction | None:
    """The answer in a model response: the last marker (box, `####`, `Answer:`, "the answer is") that
    holds a clean answer. A marker followed by a sentence ("The largest $n$ is 34") is kept as raw text
    for math-verify's extraction when nothing cleaner exists. None: no marker and no usable fallback
    (with fallback `math_verify` the caller hands the whole text to math-verify).
    """
    s = normalize_chars(text[-scan_chars:])
    wordy: Extraction | None = None
    candidates = _candidates(s)
    has_box = any(method == "boxed" for _, _, method in candidates)
    for _, raw, method in candidates:
        if method == "boxed":
            if raw.strip():
                return Extraction(raw.strip(), "boxed")
            continue
        ans, is_raw = _marker_text(raw)
        if not ans or (has_box and not _MATHY.search(ans) and parse_choice(ans) is None):
            continue  # "so our answer is correct" after a box does not replace the box
        if not is_raw:
            return Extraction(ans, method)
        if wordy is None:
            wordy = Extraction(ans, method, raw=True)
    if wordy is not None:
        return wordy
    bare = strip_delimiters(s) if len(s) <= 2 * _MAX_BARE_CHARS else s
    if (
        not candidates  # "Answer:" with nothing after it is no answer, not the answer "Answer:"
        and len(bare) <= _MAX_BARE_CHARS
        and _CONTENT.search(bare)
        and not _has_delimiters(bare)
        and len(_prose_words(bare)) <= 1
    ):
        return Extraction(bare, "whole")  # the response is just an answer: "0.6400 N", "(3,1),(2,1)"
    if fallback == "last_number":
        last = None
        for last in _NUMBER_TOKEN.finditer(s):  # noqa: B007
            pass
        if last is not None:
            return Extraction(last.group(), "last_number")
    return None


def extract_gold(text: str, scan_chars: int = 50_000) -> Extraction | None:
    """The reference answer: a bare answer ("36", "\\frac{1}{2}", "025") or a solution with a box / `#### N`.

    None means the gold holds math delimiters but no marker (`"$x \\in [0,1)$"`): math-verify reads it raw.
    """
    s = normalize_chars(text.strip())
    found = extract_answer(s, fallback="none", scan_chars=scan_chars)
    if found is not None:
        return found
    if not s or _has_delimiters(s) or not _CONTENT.search(s) or _candidates(s[-scan_chars:]):
        return None  # math-verify reads it raw (and says so when it finds nothing)
    if len(s) <= _MAX_MARKER_CHARS and _is_wordy(s):
        return None  # prose: "The answer is" alone, or a sentence with the answer somewhere in it
    return Extraction(s, "whole")


# ---------------------------------------------------------------- normalization

_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_SPACING = re.compile(r"\\[!,;: ]|\\q?quad\b|\\displaystyle\b|\\left\b|\\right\b|~")
_THIN_THOUSANDS = re.compile(r"(?<=\d)\s*(?:,\s*)?\\[!,]\s*(?:,\s*)?(?=\d{3}(?!\d))")  # 11,\! 111 and 1\,000
_FRAC_ALIASES = re.compile(r"\\[dtc]frac(?![A-Za-z])")
_TEXT_WRAP = re.compile(
    r"\\(?:text|textbf|textit|textnormal|textrm|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}"
)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b|\\circ\b")
_PERCENT = re.compile(r"\s*(?:\\?%|\b(?:percent|percentage|pct)\b\.?)$", re.IGNORECASE)
_CURRENCY = re.compile(r"\\\$|\$|[€£¥₹]")
_ASSIGN = re.compile(r"^(?P<var>[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?)\s*=\s*(?P<rhs>[^=<>]+)$")
_UNIT_WORDS = re.compile(r"(?:\s+[A-Za-z]{2,}\.?)+(?:\s*\^\s*\{?[23]\}?)?$")
_TEXT_UNIT = re.compile(
    r"\s*\\(?:text|mbox|textnormal|textrm|mathrm)\s*\{\s*[A-Za-z]{2,}[A-Za-z .]*\}(?:\s*\^\s*\{?[23]\}?)?$"
)
_MATH_WORDS = {
    "pi",
    "sqrt",
    "frac",
    "inf",
    "infty",
    "infinity",
    "and",
    "or",
    "to",
    "times",
    "cdot",
    "hundred",
    "thousand",
    "million",
    "billion",
    "trillion",
    "dozen",
    "percent",
    "percentage",
    "pct",
}
_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_SPACED_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?$")
_DECIMAL = re.compile(r"^(?P<sign>[-+]?)(?P<num>\d+(?:\.\d*)?|\.\d+)$")
_SLASH = re.compile(r"^(?P<sign>[-+]?)(?P<p>\d+)/(?P<q>\d+)$")
_FRAC = re.compile(r"^(?P<sign>[-+]?)\\frac(?:\{(?P<p>\d+)\}|(?P<p1>\d))(?:\{(?P<q>\d+)\}|(?P<q1>\d))$")
_CHOICE = re.compile(r"^(?:\((?P<p>[A-J])\)|(?P<c>[A-J])\)?)(?=[\s.:]|$)")


def strip_delimiters(s: str) -> str:
    """Remove math delimiters and a box that wrap the whole string, repeatedly (at most 10 layers)."""
    s = s.strip()
    changed, layers = True, 0
    while changed and s and layers < 10:
        layers += 1
        changed = False
        for a, b in _DELIMS:
            if len(s) > len(a) + len(b) - 1 and s.startswith(a) and s.endswith(b):
                s, changed = s[len(a) : len(s) - len(b)].strip(), True
                break
        if s.startswith(("\\boxed", "\\fbox")):
            boxes = find_boxes(s)
            if boxes and boxes[0][0] == 0 and boxes[0][1] == len(s):
                s, changed = boxes[0][2].strip(), True
    return s


def clean(s: str) -> str:
    """Spacing, `\\dfrac`, `\\text{}`, degrees and trailing punctuation normalized; delimiters removed."""
    s = strip_delimiters(s.replace("−", "-"))
    s = _THIN_THOUSANDS.sub(",", s)
    s = _SPACING.sub(" ", s)
    s = _FRAC_ALIASES.sub(r"\\frac", s)
    for _ in range(3):  # nested \text{\textbf{x}}
        s = _TEXT_WRAP.sub(r"\1", s)
    s = _DEGREES.sub("", s)
    s = s.replace("{,}", ",")
    s = re.sub(r"\s+", " ", s).strip()
    s = s.rstrip(".,;").strip()
    return strip_delimiters(s)


@dataclass(frozen=True, slots=True)
class NumberAnswer:
    """A number with what surrounded it: `x = 3` has var "x"; `28\\%` has percent set."""

    value: Value  # a Fraction, or exact.Huge / exact.Unknown for towers like 10^{10^{10}}
    exact: bool  # no decimal point: compare exactly, not rounded
    percent: bool = False
    var: str = ""


def _strip_units(s: str) -> str:
    """Drop a trailing unit: `\\text{ cm}^2`, "dollars", "square feet" (never pi, million, a lone letter)."""
    m = _TEXT_UNIT.search(s)
    if m is None:
        m = _UNIT_WORDS.search(s)
    if m is None or m.start() == 0 or not s[: m.start()].rstrip()[-1:].isdigit():
        return s
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", m.group())}
    return s if words & _MATH_WORDS else s[: m.start()].strip()


def parse_number(s: str) -> NumberAnswer | None:
    """A plain number (int, decimal, a/b, \\frac{a}{b}, thousands separators, units, %) or None."""
    s = _strip_units(strip_delimiters(s.replace("−", "-")))
    s = clean(s)
    var = ""
    m = _ASSIGN.match(s)
    if m is not None:
        var, s = m.group("var").replace("{", "").replace("}", ""), m.group("rhs").strip()
    s = _CURRENCY.sub("", s).strip()
    percent = False
    for _ in range(2):  # "28 percent", "28\\% of students": units and % in either order
        p = _PERCENT.search(s)
        if p is not None:
            percent, s = True, s[: p.start()].strip()
        s = _strip_units(s)
    if _SPACED_THOUSANDS.match(s):
        s = s.replace(" ", "")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    s = s.replace(" ", "")
    d = _DECIMAL.match(s)
    if d is not None:
        num = d.group("num")
        value = Fraction(num)
        return NumberAnswer(-value if d.group("sign") == "-" else value, "." not in num, percent, var)
    f = _SLASH.match(s) or _FRAC.match(s)
    if f is not None:
        groups = f.groupdict()
        q = int(groups.get("q") or groups.get("q1") or 0)
        if q == 0:
            return None
        value = Fraction(int(groups.get("p") or groups.get("p1") or 0), q)
        return NumberAnswer(-value if f.group("sign") == "-" else value, True, percent, var)
    a = evaluate(s)
    return None if a is None else NumberAnswer(a.value, a.exact, percent, var)


_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}", "\\langle": "\\rangle"}


def _split_commas(s: str) -> list[str] | None:
    """Top-level comma-separated parts, or None when brackets do not balance."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    if depth != 0:
        return None
    parts.append(s[start:])
    return [p.strip() for p in parts]


@dataclass(frozen=True, slots=True)
class NumberList:
    """ "(6, 31, -1)" or "-2, 1": plain numbers in brackets (kept) or bare (an unordered list of solutions)."""

    brackets: str  # "()" "[]" "{}" "(]"..., "" for a bare list
    items: tuple[NumberAnswer, ...]


def parse_number_list(s: str) -> NumberList | None:
    s = clean(s)
    if "," not in s or len(s) > 500:
        return None
    brackets = ""
    for open_, close in _BRACKETS.items():
        for close_any in (")", "]", "\\}", "\\rangle"):
            if s.startswith(open_) and s.endswith(close_any) and (open_ != "\\{" or close_any == close):
                inner = s[len(open_) : len(s) - len(close_any)]
                if _split_commas(inner) is not None:
                    brackets, s = open_ + close_any, inner
                break
        if brackets:
            break
    parts = _split_commas(s)
    if parts is None or len(parts) < 2:
        return None
    items = [parse_number(p) for p in parts]
    if any(n is None or not isinstance(n.value, Fraction) or n.var for n in items):
        return None
    return NumberList(brackets, tuple(n for n in items if n is not None))


def _lists_decision(gold: NumberList, pred: NumberList, float_rounding: int) -> FastDecision | None:
    """Same brackets and length: elementwise (sets and bare lists: as multisets). Anything else: sympy."""
    if gold.brackets != pred.brackets or len(gold.items) != len(pred.items):
        return None
    unordered = gold.brackets in ("", "\\{\\}")
    if not unordered:
        same = all(numbers_equal(g, p, float_rounding) for g, p in zip(gold.items, pred.items, strict=True))
        return FastDecision("correct" if same else "wrong", "elements equal" if same else "elements differ")
    remaining = list(pred.items)
    for g in gold.items:
        hit = next((j for j, p in enumerate(remaining) if numbers_equal(g, p, float_rounding)), None)
        if hit is None:
            return FastDecision("wrong", "elements differ")
        remaining.pop(hit)
    return FastDecision("correct", "same elements")


def parse_choice(s: str) -> str | None:
    """A multiple-choice letter: "C", "(C)", "\\text{(C)}", "C) 12", "(C) 12" -> "C"."""
    m = _CHOICE.match(clean(s))
    return (m.group("p") or m.group("c")) if m is not None else None


def _values(n: NumberAnswer) -> list[Fraction]:
    assert isinstance(n.value, Fraction)
    return [n.value, n.value / 100] if n.percent else [n.value]


def numbers_equal(gold: NumberAnswer, pred: NumberAnswer, float_rounding: int = 6) -> bool:
    """Exact for integers and fractions; rounded to `float_rounding` decimals when either has a decimal point."""
    for g in _values(gold):
        for p in _values(pred):
            if g == p:
                return True
            if not (gold.exact and pred.exact) and round(g, float_rounding) == round(p, float_rounding):
                return True
    return False


def canonical(s: str) -> str:
    """Whitespace-free cleaned form, for the identical-strings shortcut."""
    return re.sub(r"\s+", "", clean(s))


@dataclass(frozen=True, slots=True)
class FastDecision:
    status: VerdictStatus
    reason: str


def _compare_numbers(
    gold: NumberAnswer, pred: NumberAnswer, float_rounding: int, tolerance: tuple[float, ...]
) -> FastDecision:
    g, p = gold.value, pred.value
    if isinstance(g, Unknown) or isinstance(p, Unknown) or (isinstance(g, Huge) and isinstance(p, Huge)):
        return FastDecision("unscorable", "numbers too large to compare exactly")
    if isinstance(g, Huge) or isinstance(p, Huge):
        return FastDecision("wrong", "numbers differ (one has more than 10^7 digits)")
    if tolerance:
        ok = any(
            abs(a - b) <= Fraction(tolerance[0]) * (1 + Fraction(1, 10**9))
            for a in _values(gold)
            for b in _values(pred)
        )
        return FastDecision("correct" if ok else "wrong", "within tolerance" if ok else "outside tolerance")
    same = numbers_equal(gold, pred, float_rounding)
    return FastDecision("correct" if same else "wrong", "numbers equal" if same else "numbers differ")


def decide_fast(
    gold: str, pred: str, float_rounding: int = 6, tolerance: tuple[float, ...] = ()
) -> FastDecision | None:
    """Settle a pair without sympy when both are plain numbers, choice letters or identical; else None."""
    g_choice = parse_choice(gold) if len(gold) <= 40 else None
    if g_choice is not None and canonical(gold).strip("()") == g_choice:
        p_choice = parse_choice(pred)
        if p_choice is not None:
            same = p_choice == g_choice
            return FastDecision(
                "correct" if same else "wrong",
                f"choice {p_choice} {'matches' if same else 'is not'} {g_choice}",
            )
    g_can = canonical(gold)
    if g_can and g_can == canonical(pred):
        return FastDecision("correct", "identical after normalization")
    g_num, p_num = parse_number(gold), parse_number(pred)
    if g_num is not None and p_num is not None and (not g_num.var or not p_num.var or g_num.var == p_num.var):
        if len(tolerance) > 1:
            return None  # one tolerance per element of a list: the worker splits the lists
        return _compare_numbers(g_num, p_num, float_rounding, tolerance)
    if not tolerance and g_num is None and p_num is None:
        g_list, p_list = parse_number_list(gold), parse_number_list(pred)
        if g_list is not None and p_list is not None:
            return _lists_decision(g_list, p_list, float_rounding)
    return None
