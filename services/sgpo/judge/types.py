"""The judge's transport-agnostic types: what a caller sends (`JudgeItem`, `ColoringParams`), what a backend
answers (`Located`), and the two protocols (`Locator` for backends, `StepJudge` for callers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sgpo.core import AlgoConfig, InvalidInputError, RtsUnit, StepJudgement
from sgpo.core.coloring import MAX_BETA


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
class ColoringParams:
    """r = r_max * sigmoid(beta * (rts - gamma)), rts measured in tokens or steps (DESIGN.md §1)."""

    beta: float = 5.0
    gamma: float = 0.5
    r_max: float = 0.5
    rts_unit: RtsUnit = "tokens"

    def __post_init__(self) -> None:
        if not (isinstance(self.beta, int | float) and 0.0 < self.beta <= MAX_BETA):
            raise InvalidInputError("coloring.beta", f"must be in (0, {MAX_BETA}]; got {self.beta!r}")
        if not (isinstance(self.gamma, int | float) and 0.0 <= self.gamma <= 1.0):
            raise InvalidInputError("coloring.gamma", f"must be in [0, 1]; got {self.gamma!r}")
        if not (isinstance(self.r_max, int | float) and 0.0 < self.r_max < 1.0) or math.isnan(self.r_max):
            raise InvalidInputError(
                "coloring.r_max", f"must be in (0, 1) so colored rewards stay below 1; got {self.r_max!r}"
            )
        if self.rts_unit not in ("tokens", "steps"):
            raise InvalidInputError(
                "coloring.rts_unit", f"must be 'tokens' or 'steps'; got {self.rts_unit!r}"
            )

    @classmethod
    def from_algo(cls, algo: AlgoConfig) -> ColoringParams:
        return cls(algo.beta, algo.gamma, algo.r_max, algo.rts_unit)


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
    """What callers use: steps, first error, rts and colored reward per response (rts and reward from sgpo.core)."""

    name: str

    def judge(
        self,
        problem: str,
        reference_solution: str,
        items: Sequence[JudgeItem],
        coloring: ColoringParams | None = None,
    ) -> list[StepJudgement]: ...

    def close(self) -> None: ...
