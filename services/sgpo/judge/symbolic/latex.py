"""LaTeX and prose to plain arithmetic notation: the first layer of the symbolic checker.

`normalize` turns a step's text into something the tokenizer reads: \\frac{a}{b} -> ((a)/(b)), \\sqrt{x} -> √(x),
\\times / \\cdot / × -> *, thousands separators dropped (14,000), "percent" -> %, "20% of 50" -> 20% ⊗ 50,
units in \\text{...} -> ⟦unit⟧ (compared across an '='), named quantities -> LABEL. Words stay words: whether
they end or continue a claim is decided by the claim finder (`claims.py`).
"""

from __future__ import annotations

import re

from sgpo.judge.symbolic.limits import MAX_DEPTH, MAX_STEP_CHARS

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


def _read_group(text: str, pos: int) -> tuple[str, int] | None:
    """The argument of a LaTeX command at text[pos:]: a {...} group (balanced) or one character.

    Returns (the argument, the position after it), or None when there is none.
    """
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    if pos >= len(text):
        return None
    if text[pos] != "{":
        return (text[pos], pos + 1) if text[pos].isalnum() else None
    depth = 0
    for end in range(pos, len(text)):
        if text[end] == "{":
            depth += 1
        elif text[end] == "}":
            depth -= 1
            if depth == 0:
                return text[pos + 1 : end], end + 1
    return None


def _latex_to_plain(text: str, depth: int = 0) -> str:
    """LaTeX to plain arithmetic: \\frac{a}{b} -> ((a)/(b)), \\sqrt{x} -> √(x), units dropped, groups -> ()."""
    if depth > MAX_DEPTH:
        return " \\toodeep "
    out: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char not in "\\{}$&":  # copy plain text up to the next LaTeX special character in one go
            special = _LATEX_SPECIAL.search(text, pos)
            end = special.start() if special else len(text)
            out.append(text[pos:end])
            pos = end
            continue
        if char == "\\":
            command = _CMD.match(text, pos)
            if command is None:  # a lone backslash at the end
                out.append(" ")
                pos += 1
                continue
            name, after = command.group(1), command.end()
            if name in _FRAC_COMMANDS:
                numerator = _read_group(text, after)
                denominator = _read_group(text, numerator[1]) if numerator else None
                if numerator is None or denominator is None:
                    out.append(" \\frac ")
                    pos = after
                    continue
                top = _latex_to_plain(numerator[0], depth + 1)
                bottom = _latex_to_plain(denominator[0], depth + 1)
                out.append(f"(({top})/({bottom}))")
                pos = denominator[1]
            elif name == "sqrt":
                if (
                    after < len(text) and text[after] == "["
                ):  # n-th roots are not evaluated: skip index and radicand
                    close = text.find("]", after)
                    radicand = _read_group(text, close + 1) if close > 0 else None
                    out.append(" \\root ")
                    pos = radicand[1] if radicand else after
                    continue
                radicand = _read_group(text, after)
                if radicand is None:
                    out.append(" \\sqrt ")
                    pos = after
                    continue
                out.append(f"√({_latex_to_plain(radicand[0], depth + 1)})")
                pos = radicand[1]
            elif name in _TEXT_COMMANDS or name == "boxed":
                group = _read_group(text, after)
                if group is None:
                    out.append(f" \\{name} ")
                    pos = after
                    continue
                out.append(_text_group(name, group[0], out, depth))
                pos = group[1]
            elif name in _DROP_COMMANDS:
                pos = after
            elif name in _SPACE_COMMANDS:
                out.append(" ")
                pos = after
            elif name in _SYMBOLS:
                out.append(_SYMBOLS[name])
                pos = after
            else:
                out.append(f" \\{name} " if name.isalpha() else " ")
                pos = after
        elif char == "{":
            out.append("(")
            pos += 1
        elif char == "}":
            out.append(")")
            pos += 1
        elif char == "$" or char == "&":
            out.append(" ")
            pos += 1
        else:
            out.append(char)
            pos += 1
    return "".join(out)


def _last_char(out: list[str]) -> str:
    for chunk in reversed(out):
        stripped = chunk.rstrip()
        if stripped:
            return stripped[-1]
    return ""


def _unit_name(words: str) -> str:
    """A unit's comparable name: its first word, singular ("pounds/book" -> "pound", "inches" -> "inch")."""
    match = re.search(r"[A-Za-z]+", words)
    if not match:
        return ""
    word = match.group().lower()
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 2 else word


def _text_group(name: str, inner: str, out: list[str], depth: int) -> str:
    """A \\text{...}-like group: its content (numbers), a unit (after a quantity), words, or a label."""
    if name == "boxed" or not re.search(r"[^\W\d_]", inner):
        return f" {_latex_to_plain(inner, depth + 1)} "  # \\boxed{8}, \\mathbf{12}: the content counts
    if _MEANINGFUL_WORDS.search(inner):
        return " " + " ".join(re.findall(r"[^\W\d_]+", inner)) + " "  # words that carry arithmetic
    last = _last_char(out)
    if last and last in "0123456789)%":
        unit = _unit_name(inner)
        return f" ⟦{unit}⟧ " if unit else " "  # "8 \\text{ pounds}": a unit, compared across the '='
    return " LABEL "  # "\\text{Chenny's Age} - 4": a named quantity, not a number


def normalize(text: str) -> str:
    """Plain arithmetic notation for a step's text (see the module docstring); words stay words."""
    plain = text[:MAX_STEP_CHARS].translate(_UNICODE)
    plain = _BULLET.sub(" ", plain)
    plain = _MARKDOWN_BOLD.sub(" ", plain)
    plain = _DEGREES.sub(" ", plain)
    plain = _LATEX_THOUSANDS.sub(",", plain)
    plain = _latex_to_plain(plain)
    plain = _ANNOTATION.sub(" ⟦⟧ ", plain)
    plain = _THOUSANDS.sub(lambda m: m.group(0).replace(",", ""), plain)
    plain = _PERCENT_WORD.sub("%", plain)
    plain = _TIMES_X.sub(" * ", plain)
    for pattern, replacement in _WORD_OPS:
        plain = pattern.sub(replacement, plain)
    return plain
