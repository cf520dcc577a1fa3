"""The `symbolic` backend: the first wrong step of each response, from its claims and its chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sgpo.common.exact import format_exact
from sgpo.judge.config import SymbolicBackend
from sgpo.judge.symbolic.chain import FormatStep, chain_error, is_chain_format, parse_chain, reference_error
from sgpo.judge.symbolic.claims import find_claims
from sgpo.judge.types import Located


@dataclass(frozen=True, slots=True)
class SymbolicResult:
    """The first wrong step of one response and why."""

    first_error_step: int  # -1: no false claim found
    reason: str
    claims_checked: int


def parse_reference(reference_solution: str) -> list[FormatStep]:
    """The reference solution's steps in the synthetic format; [] when it is not in that format."""
    if not reference_solution.strip():
        return []
    from sgpo.core import split_steps

    parsed = parse_chain([step.text for step in split_steps(reference_solution)])
    return parsed if is_chain_format(parsed) else []


def check_steps(
    steps: Sequence[str], cfg: SymbolicBackend, reference: Sequence[FormatStep] = ()
) -> SymbolicResult:
    """The first step with a false arithmetic claim (or, in chain format, a broken chain / reference).

    `reference` is `parse_reference(reference_solution)`, used when `cfg.reference_check` is on.
    """
    n_claims = 0
    first: tuple[int, str] | None = None  # (step index, reason)
    for k, step in enumerate(steps):
        claims = find_claims(step, cfg)
        n_claims += len(claims)
        false_claim = next((claim for claim in claims if not claim.ok), None)
        if false_claim is not None:
            left = format_exact(false_claim.exact)
            first = (k, f"step {k}: {false_claim.describe()} is false; the left side is {left}")
            break
    if cfg.chain_check or (cfg.reference_check and reference):
        format_error: tuple[int, str] | None = None
        if cfg.reference_check and reference:
            format_error = reference_error(parse_chain(steps, need_header=False), reference)
        elif cfg.chain_check and is_chain_format(parsed := parse_chain(steps)):
            format_error = chain_error(parsed)
        if format_error is not None and (first is None or format_error[0] < first[0]):
            first = format_error
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
        located = []
        for steps in step_lists:
            result = check_steps(steps, self.cfg, reference)
            located.append(
                Located(result.first_error_step, result.reason, claims_checked=result.claims_checked)
            )
        return located

    def close(self) -> None:
        pass
