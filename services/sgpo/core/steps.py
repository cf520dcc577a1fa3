"""Splitting a response into reasoning steps, with character spans so a step can be measured in tokens.

Modes: `step_header` ("Step k:" lines), `blank_line` (paragraphs), `numbered` ("1." / "2)" lines), `line`,
`sentence`; `auto` tries them in that order and takes the first that yields at least two steps.

Long chains of thought split on blank lines into dozens of pieces, display-math blocks on their own among
them, and the first-error index (so rts in steps, and what the judge model must read) is measured in those
pieces. `segment_steps` post-processes a split: it keeps display math with the sentence that introduces it
(and never cuts inside a `$$`, `\\[` or `\\begin{...}` block), merges pieces shorter than `min_chars` into
a neighbour, and with `max_steps` merges consecutive steps into that many of about equal length. Spans keep
tiling the response, so step token counts stay exact.
"""

from __future__ import annotations

import itertools
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


_MATH_OPEN = re.compile(r"\$\$|\\\[|\\\]|\\begin\{|\\end\{")
_DISPLAY_START = re.compile(r"^(?:\$\$|\\\[|\\begin\{(?:align|equation|gather|multline|eqnarray)\*?\})")


def _open_math(text: str) -> bool:
    """Whether `text` leaves a display-math block open ($$ unpaired, \\[ without \\], \\begin without \\end)."""
    dollars = depth = 0
    for m in _MATH_OPEN.finditer(text):
        tok = m.group(0)
        if tok == "$$":
            dollars ^= 1
        elif tok in ("\\[", "\\begin{"):
            depth += 1
        else:
            depth = max(0, depth - 1)
    return bool(dollars or depth)


def _merge(text: str, steps: Sequence[Step]) -> Step:
    return Step(text[steps[0].start : steps[-1].end].strip(), steps[0].start, steps[-1].end)


def segment_steps(
    text: str, mode: SplitMode = "auto", *, min_chars: int = 0, max_steps: int = 0, keep_math: bool = True
) -> list[Step]:
    """`split_steps`, then: display math joined to the step before it (and open blocks closed), steps
    shorter than `min_chars` merged into the next one (the last into the one before), and at most
    `max_steps` steps (0: no cap) made by merging neighbours into groups of about equal length."""
    if min_chars < 0 or max_steps < 0:
        raise InvalidInputError(
            "segmentation", f"min_chars and max_steps must be >= 0; got {min_chars}, {max_steps}"
        )
    steps = split_steps(text, mode)
    groups: list[list[Step]] = []
    for s in steps:
        if groups and keep_math:
            prev = _merge(text, groups[-1]).text
            if _open_math(prev) or _DISPLAY_START.match(s.text):
                groups[-1].append(s)
                continue
        groups.append([s])
    if min_chars > 0:
        merged: list[list[Step]] = []
        carry: list[Step] = []
        for g in groups:
            carry += g
            if len(_merge(text, carry).text) >= min_chars:
                merged.append(carry)
                carry = []
        if carry:
            if merged:
                merged[-1] += carry
            else:
                merged.append(carry)
        groups = merged
    out = [_merge(text, g) for g in groups]
    if max_steps and len(out) > max_steps:
        out = _even_groups(text, out, max_steps)
    return out


def _even_groups(text: str, steps: list[Step], k: int) -> list[Step]:
    """`k` groups of consecutive steps, cut where the running length passes each j/k of the total."""
    lengths = [s.end - s.start for s in steps]
    total = sum(lengths)
    cuts: list[int] = []
    run = 0
    for i, n in enumerate(lengths[:-1]):
        run += n
        # cut after step i when the running length passes the next j/k mark, keeping room for the rest
        if len(cuts) < k - 1 and run >= total * (len(cuts) + 1) / k:
            cuts.append(i + 1)
        elif len(cuts) < k - 1 and len(lengths) - (i + 1) == k - 1 - len(cuts):
            cuts.append(i + 1)  # as many steps left as groups still to make: one each
    bounds = [0, *sorted(set(cuts)), len(steps)]
    return [_merge(text, steps[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
