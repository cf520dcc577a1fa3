"""ScoringClient's request splitting (the round trip: tests/integration/test_score_groups.py)."""

from __future__ import annotations

import pytest

from sgpo.integrations.client import ScoringClient, ScoringError


def g(n: int) -> dict[str, object]:
    return {"problem": "p", "answer": "1", "completions": ["x"] * n}


def test_chunks_hold_whole_groups_within_the_limit() -> None:
    c = ScoringClient("http://127.0.0.1:1/", max_completions_per_request=8)
    sizes = [[len(x["completions"]) for x in chunk] for chunk in c.chunks([g(4), g(4), g(3), g(9), g(2)])]  # type: ignore[arg-type]
    assert sizes == [[4, 4], [3], [9], [2]]  # a group larger than the limit goes alone (the server says 413)
    assert c.url == "http://127.0.0.1:1"


def test_an_unreachable_endpoint_fails_loudly() -> None:
    c = ScoringClient("http://127.0.0.1:1", attempts=2, backoff_s=0.0)
    with pytest.raises(ScoringError, match="unreachable after 2 attempt"):
        c.score_groups([g(2)])
    assert c.requests_sent == 2
