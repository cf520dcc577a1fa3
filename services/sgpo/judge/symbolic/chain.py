"""The synthetic task's format, `Step k: a op b = c` then `Answer: N`: chain and reference checks.

On top of the arithmetic, a response in this format is checked for chain consistency (each step starts from
the previous result) and, given a reference solution in the same format, for alignment with it (a copied
wrong operand or a dropped step is an error even when the arithmetic is right).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from sgpo.common.exact import format_exact, parse_decimal

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
    """`left op right = result`."""

    left: Fraction
    op: str  # one of + - * /
    right: Fraction
    result: Fraction


@dataclass(frozen=True, slots=True)
class AnswerStep:
    """`Answer: value`."""

    value: Fraction


FormatStep = ChainStep | AnswerStep | None  # None: a step not in the format


def parse_format_step(text: str, need_header: bool = True) -> FormatStep:
    """`Step k: a op b = c` or `Answer: N` (the synthetic task's format), else None.

    Without `need_header`, a bare `a op b = c` counts too (when a reference fixes the format, the header adds
    nothing; without one, bare equations may be independent computations, not a chain).
    """
    answer = _ANSWER_STEP.match(text)
    if answer:
        return AnswerStep(parse_decimal(answer.group(1)))
    header = _HEADER.match(text)
    if header is None and need_header:
        return None
    equation = _CHAIN_STEP.match(text[header.end() :] if header else text)
    if equation:
        op = _OP_NAMES.get(equation.group(2), equation.group(2))
        return ChainStep(
            parse_decimal(equation.group(1)),
            op,
            parse_decimal(equation.group(3)),
            parse_decimal(equation.group(4)),
        )
    return None


def parse_chain(steps: Sequence[str], need_header: bool = True) -> list[FormatStep]:
    return [parse_format_step(step, need_header) for step in steps]


def is_chain_format(parsed: Sequence[FormatStep]) -> bool:
    """Only `a op b = c` steps, at least one, and at most a final answer line."""
    if not parsed or any(step is None for step in parsed):
        return False
    if not isinstance(parsed[0], ChainStep):
        return False
    return all(isinstance(step, ChainStep) for step in parsed[:-1])


def _same_operation(step: ChainStep, ref_step: ChainStep) -> bool:
    if step.op != ref_step.op:
        return False
    if (step.left, step.right) == (ref_step.left, ref_step.right):
        return True
    return step.op in "+*" and (step.left, step.right) == (ref_step.right, ref_step.left)


def _show(step: ChainStep | AnswerStep) -> str:
    if isinstance(step, AnswerStep):
        return f"Answer: {format_exact(step.value)}"
    return f"{format_exact(step.left)} {step.op} {format_exact(step.right)} = {format_exact(step.result)}"


def chain_error(parsed: Sequence[FormatStep]) -> tuple[int, str] | None:
    """First step that does not continue from the previous step's result (chain format only)."""
    for k in range(1, len(parsed)):
        prev, cur = parsed[k - 1], parsed[k]
        if not isinstance(prev, ChainStep):
            continue
        if isinstance(cur, ChainStep):
            starts = cur.left == prev.result or (cur.op in "+*" and cur.right == prev.result)
            if not starts:
                return k, (
                    f"step {k} ('{_show(cur)}') does not start from the previous step's result "
                    f"{format_exact(prev.result)}"
                )
        elif isinstance(cur, AnswerStep) and cur.value != prev.result:
            return k, (
                f"step {k} answers {format_exact(cur.value)} but the previous step ended at "
                f"{format_exact(prev.result)}"
            )
    return None


def reference_error(parsed: Sequence[FormatStep], reference: Sequence[FormatStep]) -> tuple[int, str] | None:
    """First step that departs from a chain-format reference solution, by position."""
    for k, step in enumerate(parsed):
        ref_step = reference[k] if k < len(reference) else None
        if ref_step is None:
            return k, f"step {k} goes beyond the reference solution's {len(reference)} steps"
        if step is None:
            return k, f"step {k} is not an 'a op b = c' step; the reference does '{_show(ref_step)}'"
        if isinstance(ref_step, ChainStep):
            if isinstance(step, AnswerStep):
                return k, f"step {k} answers early; the reference still does '{_show(ref_step)}'"
            if not _same_operation(step, ref_step):
                return k, f"step {k} does '{_show(step)}' where the reference does '{_show(ref_step)}'"
        elif isinstance(step, ChainStep):
            return k, f"step {k} ('{_show(step)}') goes on after the reference's answer"
        elif step.value != ref_step.value:
            return k, (
                f"step {k} answers {format_exact(step.value)}; the reference answers {format_exact(ref_step.value)}"
            )
    return None
