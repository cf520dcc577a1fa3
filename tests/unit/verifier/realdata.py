"""The real-data agreement checks (../shared/data), shared by the tests and `bench/verifier.py agreement`.

Each `score_*` runs the real MathVerifier over a data set and returns an `Agreement`: how many of the
externally labelled judgements it reproduces, and every disagreement with enough context to explain it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgpo.verifier import MathVerifier, VerifierConfig
from tests.support import SHARED_DATA

MATH_VERIFY_CASES = SHARED_DATA / "math-verify-tests" / "math_verify_cases.jsonl"
GSM8K_SOLUTIONS = SHARED_DATA / "gsm8k" / "example_model_solutions.jsonl"
MATH500 = SHARED_DATA / "prm800k" / "math500_test.jsonl"
OLYMPIAD_SCORING = SHARED_DATA / "olympiadbench-judge" / "scoring_examples.json"
GSM8K_MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")

# Math-Verify's own cases where this verifier decides otherwise, on purpose (id -> why).
MATH_VERIFY_KNOWN_DISAGREEMENTS = {
    5: "'1000,99' read as the list 1000, 99: a comma without a 3-digit group separates list items "
    "(competition answers write lists as '1,3'), upstream reads a decimal comma",
    6: "'1,22' read as the list 1, 22 (same rule); upstream reads the decimal 1.22",
    31: "upstream refuses a newline inside inline $...$ and expects no match; we read the 9 that is there",
    32: "same as 31 with \\( ... \\)",
    252: "'\\boxed{1} no no no no no \\boxed{2}': we join boxes separated by a short gap without a sentence "
    "break (to read 'x=\\boxed{1}, y=\\boxed{2}'); upstream joins only across ',', 'and', 'or'",
}


@dataclass
class Agreement:
    name: str
    total: int = 0
    agree: int = 0
    disagreements: list[dict[str, Any]] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.agree / self.total if self.total else 0.0

    def add(self, ok: bool, status: str, **context: Any) -> None:
        self.total += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if ok:
            self.agree += 1
        else:
            self.disagreements.append({"status": status, **context})

    def summary(self) -> str:
        return f"{self.name}: {self.agree}/{self.total} = {100 * self.rate:.2f}% (statuses {self.statuses})"


def _jsonl(path: Any) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def math_verify_cases(ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    rows = _jsonl(MATH_VERIFY_CASES)
    if ids is None:
        return rows
    wanted = set(ids)
    return [r for r in rows if r["id"] in wanted]


def score_math_verify(rows: Sequence[dict[str, Any]], workers: int = 2, deadline_s: float = 5.0) -> Agreement:
    """Each row carries the upstream harness's options (float rounding, strict, set-relation)."""
    result = Agreement("Math-Verify cases")
    groups: dict[tuple[int, bool, bool], list[dict[str, Any]]] = {}
    for r in rows:
        key = (
            int(r.get("precision", 6)),
            bool(r.get("strict", True)),
            bool(r.get("allow_set_relation_comp", False)),
        )
        groups.setdefault(key, []).append(r)
    for (rounding, strict, set_rel), group in sorted(groups.items()):
        cfg = VerifierConfig(
            workers=workers,
            deadline_s=deadline_s,
            float_rounding=rounding,
            strict=strict,
            allow_set_relation_comp=set_rel,
        )
        with MathVerifier(cfg) as v:
            verdicts = v.verify_batch([(r["gold"], r["pred"]) for r in group])
        for r, verdict in zip(group, verdicts, strict=True):
            got = 1 if verdict.status == "correct" else 0
            result.add(
                got == r["expected"],
                verdict.status,
                id=r["id"],
                expected=r["expected"],
                gold=r["gold"][:80],
                pred=r["pred"][-80:],
                reason=verdict.reason,
            )
    return result


def gsm8k_pairs(limit: int | None = None) -> list[tuple[str, str, bool, str]]:
    """(ground_truth solution, model solution, is_correct, model) for the 6B and 175B solutions."""
    rows = _jsonl(GSM8K_SOLUTIONS)[:limit]
    return [
        (r["ground_truth"], r[m]["solution"], bool(r[m]["is_correct"]), m) for r in rows for m in GSM8K_MODELS
    ]


def score_gsm8k(verifier: MathVerifier, limit: int | None = None) -> Agreement:
    result = Agreement("GSM8K example_model_solutions vs is_correct")
    pairs = gsm8k_pairs(limit)
    verdicts = verifier.verify_batch([(g, p) for g, p, _, _ in pairs])
    for i, ((_, pred, label, model), v) in enumerate(zip(pairs, verdicts, strict=True)):
        result.add(
            (v.status == "correct") == label,
            v.status,
            index=i,
            model=model,
            label=label,
            extracted=v.extracted,
            reason=v.reason,
            pred=pred[-80:],
        )
    return result


def score_math500(verifier: MathVerifier) -> Agreement:
    result = Agreement("MATH-500 gold solution vs answer")
    rows = _jsonl(MATH500)
    verdicts = verifier.verify_batch([(r["answer"], r["solution"]) for r in rows])
    for r, v in zip(rows, verdicts, strict=True):
        result.add(
            v.status == "correct",
            v.status,
            unique_id=r["unique_id"],
            answer=r["answer"],
            extracted=v.extracted,
            reason=v.reason,
        )
    return result


def olympiad_judgements() -> list[tuple[str, str, bool, float | list[float] | None]]:
    """(gold, answer, equal, tolerance) for every judgement in OlympiadBench's scoring examples."""
    with open(OLYMPIAD_SCORING, encoding="utf-8") as f:
        groups = json.load(f)
    out = []
    for g in groups:
        for a in g["Ans"]:
            tol = a.get("precision")
            if isinstance(tol, str):
                tol = float(tol)
            out.append((g["GT"], a["answer"], bool(a["equal"]), tol))
    return out


def score_olympiad(verifier: MathVerifier) -> Agreement:
    result = Agreement("OlympiadBench scoring examples")
    judgements = olympiad_judgements()
    verdicts = verifier.verify_batch(
        [(g, a) for g, a, _, _ in judgements], tolerances=[t for *_, t in judgements]
    )
    for (gold, ans, equal, tol), v in zip(judgements, verdicts, strict=True):
        result.add(
            (v.status == "correct") == equal,
            v.status,
            gold=gold,
            answer=ans,
            equal=equal,
            tolerance=tol,
            reason=v.reason,
        )
    return result
