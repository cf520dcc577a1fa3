"""Generated hostile (gold, pred) pairs: towers, huge strings, deep nesting, broken LaTeX, odd bytes, emptiness.

`adversarial_items()` returns at least 300 pairs, deterministic, each tagged with its family. Some make
sympy run for hours (`hangs`), some are megabytes long, some are pathological for regexes and parsers.
"""

from __future__ import annotations

import random

HANGERS = (
    "\\boxed{\\int_0^1 e^{-x^{100}} \\sin(x^{99}) dx}",
    "\\boxed{x^{10^{10^{10}}}}",
    "\\boxed{\\sin(x)^{10^{10^{10}}}}",
    "\\boxed{(x+1)^{100000}}",
    "\\boxed{(x+y)^{5000} - (y+x)^{5000}}",
)
TOWERS = (
    "10^{10^{10^{10}}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "9^{9^{9^{9}}}",
    "(10!)!",
    "((5!)!)!",
    "100000!",
    "10^{10^{10}} - 10^{10^{10}}",
    "-10^{10^{10^{10}}}",
    "\\frac{1}{10^{10^{10}}}",
    "(10^{10^{10}})!",
    "2^{2^{64}} \\cdot x",
    "\\Gamma(10^{10})",
)
MALFORMED = (
    "\\frac{1}{",
    "\\frac{}{}",
    "\\sqrt[",
    "\\left(",
    "\\begin{pmatrix}1 & 2",
    "\\end{pmatrix}",
    "}{",
    "\\\\\\\\",
    "^^^^^^",
    "_{_{_{_{",
    "\\boxed{",
    "\\boxed{}",
    "\\boxed",
    "$$$$$$",
    "$",
    "\\text{",
    "\\frac{1}{0}",
    "1/0",
    "0/0",
    "\\infty - \\infty",
    "\\log(0)",
    "\\sqrt{-1}^{\\sqrt{-1}}",
    "\\undefinedmacro{3}",
    "\\frac12\\frac34\\frac56\\frac",
    "x^{y^{z^{",
    "((((((",
    "))))))",
    "\\begin{array}{c|c} 1 & 2 \\\\ \\hline 3 & 4",
    "\\lim_{x \\to 0} \\frac{\\sin x}{x}",
    "\\sum_{n=1}^{\\infty} \\frac{1}{n^2}",
)
ODD_TEXT = (
    "\x00",
    "1\x002",
    "36\x00",
    "\x00\\boxed{36}",
    "٣٦",  # Arabic-Indic digits
    "３６",  # full-width digits
    "\u202e36\u202c",  # right-to-left override
    "3\u200b6",  # zero-width space
    "🙂 36 🙂",
    "e\u0301\u0301\u0301",  # stacked combining accents
    "\ufeff36",
    "−36",  # unicode minus
    "⅓",
    "∞",
    "√2",
    "\ud800",  # a lone surrogate (valid in a Python str, not in UTF-8)
    "\r\n\r\n36\r\n",
    "\t \n",
)
EMPTY = ("", " ", "\n\n", "$$", "\\boxed{}", "Answer:", "####", "The answer is")
GOLDS = ("36", "\\frac{1}{2}", "x^2+1", "[0, 1)", "10^{10}", "")


def _long_strings(rng: random.Random) -> list[str]:
    mb = 1_000_000
    printable = "".join(chr(rng.randrange(32, 127)) for _ in range(4096))
    return [
        "9" * mb,
        "\\boxed{" + "9" * mb + "}",
        "a" * mb,
        "$" * mb,
        "\\frac{" * (mb // 6),
        "\\boxed{" * (mb // 7),
        "answer is " * (mb // 10),
        "#### " * (mb // 5),
        "Answer: " * (mb // 8),
        "\\(" * (mb // 2),
        (printable * (mb // len(printable) + 1))[:mb],
        "1+" * (mb // 2) + "1",
        "x" + " " * mb + "= 3",
        "\\boxed{1}" + " padding" * (mb // 8) + "\\boxed{2}",
        ("the answer is $" + "(" * 1000) * 200,
    ]


def _nested(depth: int) -> list[str]:
    return [
        "{" * depth + "1" + "}" * depth,
        "\\boxed{" * depth + "1" + "}" * depth,
        "(" * depth + "1" + ")" * depth,
        "\\frac{" * depth + "1" + "}{2}" * depth,
        "\\sqrt{" * depth + "2" + "}" * depth,
        "x^{" * depth + "2" + "}" * depth,
        "{" * depth,
        "}" * depth,
        "\\left(" * depth + "1" + "\\right)" * depth,
        "[" * depth + "1" + "]" * depth,
    ]


def adversarial_items(seed: int = 0) -> list[tuple[str, str, str]]:
    """(family, gold, pred) triples; at least 300 of them."""
    rng = random.Random(seed)
    items: list[tuple[str, str, str]] = []
    for pred in HANGERS:
        items += [("hang", "x", pred), ("hang", "1", pred)]
    for t in TOWERS:
        items += [
            ("tower", t, "10^{10}"),
            ("tower", "36", t),
            ("tower", t, t),
            ("tower", t, f"\\boxed{{{t}}}"),
        ]
    for m in MALFORMED:
        items += [
            ("malformed", "36", m),
            ("malformed", m, "36"),
            ("malformed", m, m),
            ("malformed", "x", f"\\boxed{{{m}}}"),
        ]
    for o in ODD_TEXT:
        items += [("odd", "36", o), ("odd", o, "36"), ("odd", o, o)]
    for e in EMPTY:
        for g in GOLDS:
            items.append(("empty", g, e))
        items.append(("empty", e, "36"))
    for s in _long_strings(rng):
        items += [("long", "36", s), ("long", s, "36")]
    for s in _nested(10_000):
        items += [("nested", "1", s), ("nested", s, "1")]
    # Random LaTeX-ish soup: tokens that trip tokenizers and parsers in combination.
    tokens = [
        "\\frac",
        "{",
        "}",
        "^",
        "_",
        "\\sqrt",
        "(",
        ")",
        "[",
        "]",
        "\\\\",
        "$",
        "1",
        "x",
        "=",
        ",",
        "\\boxed",
        "\\left",
        "\\right",
        "!",
        "%",
        "\\text{",
        "&",
        "\\begin{pmatrix}",
        "\\end{pmatrix}",
        " ",
        "-",
        "\\pi",
    ]
    for _ in range(60):
        soup = "".join(rng.choice(tokens) for _ in range(rng.randrange(1, 80)))
        items.append(("soup", rng.choice(GOLDS[:5]), soup))
    return items
