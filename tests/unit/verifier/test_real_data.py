"""Agreement with externally labelled judgements in ../shared/data (measured on real data).

CI runs MATH-500 and OlympiadBench in full and fixed subsets of the Math-Verify cases and of GSM8K;
the `slow` tests run everything (`bench/verifier.py agreement` prints the same figures).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sgpo.verifier import MathVerifier, VerifierConfig
from tests.unit.verifier.realdata import (
    MATH_VERIFY_KNOWN_DISAGREEMENTS,
    math_verify_cases,
    score_gsm8k,
    score_math500,
    score_math_verify,
    score_olympiad,
)

# Every 8th case plus the documented disagreements: 39 of the 269 pairs.
MATH_VERIFY_SUBSET = sorted(set(range(0, 269, 8)) | set(MATH_VERIFY_KNOWN_DISAGREEMENTS))
# Agreement is measured, not the deadline (test_adversarial does that): on the shared 2-core machine a
# long LaTeX tuple can take more than the default 5 s to parse, which would be unscorable, not wrong.
DEADLINE_S = 60.0


@pytest.fixture(scope="module")
def verifier() -> Iterator[MathVerifier]:
    with MathVerifier(VerifierConfig(workers=2, deadline_s=DEADLINE_S)) as v:
        v.wait_ready()
        yield v


def _explain(disagreements: list[dict[str, object]]) -> str:
    return "\n".join(str(d) for d in disagreements)


def test_math_verify_cases_subset() -> None:
    result = score_math_verify(math_verify_cases(MATH_VERIFY_SUBSET), deadline_s=DEADLINE_S)
    assert result.total == len(MATH_VERIFY_SUBSET)
    unexpected = [d for d in result.disagreements if d["id"] not in MATH_VERIFY_KNOWN_DISAGREEMENTS]
    assert not unexpected, _explain(unexpected)
    # the known ones are 5 of 269 overall; outside them this subset agrees everywhere
    assert result.total - result.agree == len(MATH_VERIFY_KNOWN_DISAGREEMENTS)


@pytest.mark.slow
def test_math_verify_cases_all() -> None:
    result = score_math_verify(math_verify_cases(), deadline_s=DEADLINE_S)
    assert result.total == 269
    assert {d["id"] for d in result.disagreements} == set(MATH_VERIFY_KNOWN_DISAGREEMENTS), _explain(
        result.disagreements
    )
    assert result.rate >= 0.97


def test_gsm8k_model_solutions_subset(verifier: MathVerifier) -> None:
    result = score_gsm8k(verifier, limit=300)
    assert result.total == 1200
    assert result.rate >= 0.99, _explain(result.disagreements)
    assert result.statuses.get("unscorable", 0) == 0


@pytest.mark.slow
def test_gsm8k_model_solutions_all(verifier: MathVerifier) -> None:
    result = score_gsm8k(verifier)
    assert result.total == 4 * 1319
    assert result.rate >= 0.99, _explain(result.disagreements)


def test_math500_gold_solutions_verify(verifier: MathVerifier) -> None:
    result = score_math500(verifier)
    assert result.total == 500
    assert result.rate >= 0.994, _explain(result.disagreements)


def test_olympiadbench_scoring_examples_reproduced(verifier: MathVerifier) -> None:
    result = score_olympiad(verifier)
    assert result.total == 36
    assert result.agree == 36, _explain(result.disagreements)
