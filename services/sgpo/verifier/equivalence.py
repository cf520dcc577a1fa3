"""Symbolic equivalence with math-verify (latex2sympy2-extended + sympy). Runs only in worker processes.

math-verify's own timeouts use SIGALRM, which fails off the main thread and cannot stop C-level sympy
work reliably; here they are switched off (`parsing_timeout=None`, `timeout_seconds=None`) and the
deadline is enforced from outside by killing the worker (`sgpo.verifier.pool`).

A side is either an extracted answer (wrapped in `$...$` before parsing) or raw text that math-verify's
own extraction reads (`raw=True`: no marker was found, the fallback is `math_verify`).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field, replace
from typing import Any

from sgpo.core.types import VerdictStatus

# An answer that looks like math (so failing to parse it is a parse failure, not a wrong answer).
_MATHY = re.compile(r"[\d\\^{}()\[\]|<>=+*/]")
# A subscript in braces (one level of nested braces allowed) or `_\mathrm{B}`.
_SUBSCRIPT = re.compile(r"_\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}|_\\(?:mathrm|text|rm)\s*\{([^{}]*)\}")
_SUB_WRAP = re.compile(r"\\(?:mathrm|text|mathit|rm|mathbf)\s*\{([^{}]*)\}")
_SUB_COMMAND = re.compile(r"\\([A-Za-z]+)")
_SINGLE_EQ = re.compile(r"(?<![<>!=\\:])=(?!=)")
_NAME_LHS = re.compile(
    r"^\\?[A-Za-z]+\s*(?:_\{[^{}]*\}|_[A-Za-z0-9])?\s*(?:\^\{?\\prime\}?|')*\s*(?:\([^()=]*\))?$"
)
_MAX_EXTRACTED_CHARS = 200


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """One pair for the worker. `tolerance`: absolute tolerance per gold element (one value: all)."""

    gold: str
    pred: str
    gold_raw: bool = False
    pred_raw: bool = False
    tolerance: tuple[float, ...] = ()
    float_rounding: int = 6
    strict: bool = True
    allow_set_relation_comp: bool = False
    pred_method: str = ""
    """How the answer was found (boxed, answer_line, ...; "" when math-verify reads the raw text)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: VerdictStatus
    extracted: str = ""
    reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def _configs() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _plain_subscript(m: re.Match[str]) -> str:
    inner = m.group(1) if m.group(1) is not None else m.group(2)
    inner = _SUB_WRAP.sub(r"\1", inner)
    return "_{" + _SUB_COMMAND.sub(r"\1", inner).replace(" ", "") + "}"


def wrap(answer: str) -> str:
    """An extracted answer as math-verify expects it: one inline math environment, with subscripts
    made plain names (`k_{\\mathrm{B}}` -> `k_{B}`, `I_{\\max}` -> `I_{max}`) that latex2sympy can parse."""
    answer = _SUBSCRIPT.sub(_plain_subscript, answer) if "_" in answer else answer
    return "$" + re.sub(r"(?<!\\)\$", "", answer) + "$"


def split_assignment(answer: str) -> tuple[str, str] | None:
    """ "I_{max} = \\frac{q}{2}" -> ("I_{max}", "\\frac{q}{2}") when the left side is a name or f(x)."""
    parts = _SINGLE_EQ.split(answer)
    if len(parts) != 2 or not _NAME_LHS.match(parts[0].strip()) or not parts[1].strip():
        return None
    return parts[0].strip(), parts[1].strip()


def _parse(text: str, raw: bool) -> list[Any]:
    return list(_parse_cached(text, raw))


@functools.lru_cache(maxsize=4096)
def _parse_cached(text: str, raw: bool) -> tuple[Any, ...]:
    """Parses are cached per worker: the G responses of a group share one gold, and latex2sympy's own
    cache holds 20 entries. Sympy expressions are immutable, so sharing them is safe."""
    from math_verify import parse

    return tuple(parse(text if raw else wrap(text), _configs(), parsing_timeout=None))


def _shown(parsed: list[Any], fallback: str) -> str:
    strings = [x for x in parsed if isinstance(x, str)]
    text = strings[-1] if strings else (str(parsed[0]) if parsed else fallback)
    return text[:_MAX_EXTRACTED_CHARS]


def _split_top_level(s: str) -> list[str]:
    """ "7 \\times 10^{35}, 0.002" -> two parts; commas inside (), [], {} do not split."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(s):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return [p.strip() for p in parts if p.strip()]


def _numeric_values(answer: str) -> list[float] | None:
    """Each comma-separated part of an answer as a float, in order; None if any part is not a number."""
    import sympy

    from sgpo.verifier.extract import strip_delimiters

    values = []
    for part in _split_top_level(strip_delimiters(answer)):
        parsed = [x for x in _parse(part, raw=False) if not isinstance(x, str)]
        if not parsed:
            return None
        expr = parsed[0]
        if isinstance(expr, sympy.Eq) or getattr(expr, "is_Relational", False):
            expr = expr.rhs
        try:
            value = complex(sympy.N(expr))
        except (TypeError, ValueError, AttributeError):
            return None
        if value.imag != 0:
            return None
        values.append(value.real)
    return values or None


def _within_tolerance(gold: list[float], pred: list[float], tolerance: tuple[float, ...]) -> bool:
    """OlympiadBench's rule: every gold value matches a distinct predicted one within its tolerance."""
    if len(gold) != len(pred):
        return False
    remaining = list(pred)
    for i, g in enumerate(gold):
        tol = tolerance[min(i, len(tolerance) - 1)]
        hit = next((j for j, p in enumerate(remaining) if abs(g - p) <= tol * (1 + 1e-9)), None)
        if hit is None:
            return False
        remaining.pop(hit)
    return True


def _undefined(expr: Any) -> bool:
    import sympy

    try:
        return bool(isinstance(expr, sympy.Basic) and expr.has(sympy.nan, sympy.zoo))
    except Exception:
        return False


def _drop_names(req: CheckRequest) -> CheckRequest:
    """Compare right-hand sides when one side names its answer ("I_{max} = ...") and the other does not,
    or both name it the same way; "x = 1" against "y = 1" is left to math-verify."""
    if req.gold_raw or req.pred_raw:
        return req
    g, p = split_assignment(req.gold), split_assignment(req.pred)
    if g is None and p is None:
        return req
    if g is not None and p is not None and g[0].replace(" ", "") != p[0].replace(" ", ""):
        return req
    if (g is None and "=" in req.gold) or (p is None and "=" in req.pred):
        return req  # "2x+4y-3=0" against "y=...": an equation against an equation
    return replace(req, gold=g[1] if g else req.gold, pred=p[1] if p else req.pred)


def check(req: CheckRequest) -> CheckResult:
    """Parse both sides with math-verify and compare them; never raises for bad input."""
    from math_verify import verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    req = _drop_names(req)
    gold = _parse(req.gold, req.gold_raw)
    if not gold:
        return CheckResult("unscorable", "", "could not parse the gold answer")
    if any(_undefined(x) for x in gold):
        return CheckResult("unscorable", "", "the gold answer is undefined (division by zero or NaN)")
    pred = _parse(req.pred, req.pred_raw)
    if not pred:
        # The response's failure, not the verifier's: wrong (see sgpo.verifier.verifier).
        reason = "no answer found in the response" if req.pred_raw else "could not parse the answer"
        return CheckResult("wrong", "", reason)
    shown = _shown(pred, req.pred)
    if req.tolerance:
        g_vals = _numeric_values(req.gold if not req.gold_raw else _shown(gold, req.gold))
        p_vals = _numeric_values(req.pred if not req.pred_raw else shown)
        if g_vals is not None and p_vals is not None:
            ok = _within_tolerance(g_vals, p_vals, req.tolerance)
            return CheckResult(
                "correct" if ok else "wrong", shown, "within tolerance" if ok else "outside tolerance"
            )
    ok = verify(
        gold,
        pred,
        float_rounding=req.float_rounding,
        strict=req.strict,
        allow_set_relation_comp=req.allow_set_relation_comp,
        timeout_seconds=None,
    )
    if ok:
        return CheckResult("correct", shown, "equivalent")
    gold_math = any(not isinstance(x, str) for x in gold)
    pred_math = any(not isinstance(x, str) for x in pred)
    if not gold_math and pred_math and _MATHY.search(_shown(gold, req.gold)):
        return CheckResult("unscorable", shown, "could not parse the gold answer as math")
    if gold_math and not pred_math and _MATHY.search(shown):
        return CheckResult("wrong", shown, "could not parse the answer as math")
    return CheckResult("wrong", shown, "not equivalent")
