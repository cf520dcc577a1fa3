"""The judge's transport-agnostic types: what a caller sends (`JudgeItem`), what a backend answers (`Located`),
and the two protocols (`Locator` for backends, `StepJudge` for callers). Coloring parameters are
`sgpo.core.ColoringParams`: the judge locates, core scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sgpo.core import ColoringParams, StepJudgement


@dataclass(frozen=True, slots=True)
class JudgeItem:
    """One response to judge: its text (the judge splits it) or its steps, never both.

    `token_char_starts` (see Completion.token_char_starts) are the character offsets of the response's tokens
    in `response`; with them rts is measured in tokens, without them in characters (the reason says so).
    """

    response: str = ""
    steps: tuple[str, ...] = ()
    token_char_starts: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Located:
    """A backend's reading of one response: the first wrong step (-1: none found), or None when it failed.

    A failure (timeout, unparseable or out-of-range reply, input too long) is data, never an invented index.
    """

    first_error_step: int | None
    reason: str
    backend: str = ""  # which stage decided, when it differs from the backend's name (cascade)
    claims_checked: int = 0  # arithmetic claims the symbolic checker evaluated


class Locator(Protocol):
    """A backend: finds the first wrong step of each response of one problem."""

    name: str

    def locate(
        self, problem: str, reference_solution: str, step_lists: Sequence[Sequence[str]]
    ) -> list[Located]: ...

    def close(self) -> None: ...


class StepJudge(Protocol):
    """What callers use: steps, first error and step lengths per response (rts and reward: sgpo.core)."""

    name: str
    coloring: ColoringParams

    def judge(
        self,
        problem: str,
        reference_solution: str,
        items: Sequence[JudgeItem],
    ) -> list[StepJudgement]: ...

    def close(self) -> None: ...
