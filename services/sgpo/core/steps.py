"""Splitting a response into reasoning steps, with character spans so a step can be measured in tokens.

Modes: `step_header` ("Step k:" lines), `blank_line` (paragraphs), `numbered` ("1." / "2)" lines), `line`,
`sentence`; `auto` tries them in that order and takes the first that yields at least two steps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sgpo.core.errors import InvalidInputError

SplitMode = Literal["auto", "step_header", "blank_line", "numbered", "line", "sentence"]

_BOUNDARIES: dict[str, re.Pattern[str]] = {
    # "Step k" headers; a closing "Answer:" / "The answer is" / "####" line is a step of its own.
    "step_header": re.compile(
        r"^[ \t]*(?:\*\*)?(?:#+[ \t]*)?(?:step[ \t]*\d+\b|(?:final[ \t]+)?answer\b|the[ \t]+answer[ \t]+is\b|####)",
        re.IGNORECASE | re.MULTILINE,
    ),
    "numbered": re.compile(r"^[ \t]*\d{1,3}[.)][ \t]+", re.MULTILINE),
    "line": re.compile(r"^(?=[ \t]*\S)", re.MULTILINE),
    "blank_line": re.compile(r"(?:(?<=\n)|^)[ \t]*\n(?:[ \t]*\n)*(?=[ \t]*\S)|\A(?=\s*\S)"),
    # A sentence starts after ., ! or ? and whitespace, before an upper-case letter, a digit or LaTeX.
    "sentence": re.compile(r"(?:(?<=[.!?])\s+(?=[A-Z0-9\\$(]))|\A(?=\s*\S)"),
}
_AUTO_ORDER: tuple[SplitMode, ...] = ("step_header", "blank_line", "numbered", "line", "sentence")
_STEP_HEADER = re.compile(r"^[ \t]*(?:\*\*)?(?:#+[ \t]*)?step[ \t]*\d+\b", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Step:
    text: str
    start: int  # the step covers text[start:end] of the response (surrounding whitespace included)
    end: int


def _split_at(text: str, starts: list[int]) -> list[Step]:
    starts = sorted(set([0, *starts]))
    steps: list[Step] = []
    for a, b in zip(starts, [*starts[1:], len(text)], strict=True):
        piece = text[a:b].strip()
        if piece:
            steps.append(Step(piece, a, b))
    # Whitespace-only pieces are dropped; give their span to the step before so spans tile the text.
    return [
        Step(s.text, s.start, steps[i + 1].start if i + 1 < len(steps) else len(text))
        for i, s in enumerate(steps)
    ]


def _split_mode(text: str, mode: SplitMode) -> list[Step]:
    if mode == "blank_line":
        starts = [m.end() for m in _BOUNDARIES["blank_line"].finditer(text)]
    elif mode == "sentence":
        starts = [m.end() for m in _BOUNDARIES["sentence"].finditer(text)]
    else:
        starts = [m.start() for m in _BOUNDARIES[mode].finditer(text)]
    return _split_at(text, starts)


def split_steps(text: str, mode: SplitMode = "auto") -> list[Step]:
    """Steps of a response; an empty (or whitespace-only) response is an error, not zero steps."""
    if not text.strip():
        raise InvalidInputError("response", "is empty; there are no steps to judge")
    if mode != "auto":
        return _split_mode(text, mode)
    for m in _AUTO_ORDER:
        if m == "step_header" and len(_STEP_HEADER.findall(text)) < 2:
            continue
        steps = _split_mode(text, m)
        if len(steps) >= 2:
            return steps
    return _split_mode(text, "line")


def compute_step_token_counts(steps: Sequence[Step], token_char_starts: Sequence[int]) -> list[int]:
    """Tokens per step: a token belongs to the step whose span holds its first character."""
    counts = [0] * len(steps)
    k = 0
    for pos in token_char_starts:
        while k + 1 < len(steps) and pos >= steps[k + 1].start:
            k += 1
        counts[k] += 1
    return counts
