"""Tokens of normalized text (`latex.normalize`): numbers, operators, parentheses, '=' and '≈', words."""

from __future__ import annotations

import re
from typing import NamedTuple

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
# Kinds an expression is made of; words, "=" and other symbols end it.
MATH_KINDS = frozenset({"num", "op", "pct", "lp", "rp", "sqrt", "unit"})


class Token(NamedTuple):  # a tuple: steps have thousands of tokens and this is the hot path
    kind: str
    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """The tokens of normalized text; anything unread is one `other` token per character."""
    return [Token(m.lastgroup or "other", m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]
