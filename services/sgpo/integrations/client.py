"""`ScoringClient`: `POST /v1/score_groups` from a trainer process, in requests of whole groups.

Plain dicts in and out (the wire format of sgpo.judge.scoring), so it runs in any framework's environment with
httpx alone. A failure raises `ScoringError` with the server's message: a trainer must not train on rewards
that were never computed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

RETRY_STATUSES = {502, 503, 504}


class ScoringError(RuntimeError):
    """The scoring endpoint failed for good (refused the request, or stayed unreachable)."""


class ScoringClient:
    """Scores groups through the judge's `/v1/score_groups`, at most `max_completions_per_request` completions
    per request (keep it at or below the judge's max_items)."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_completions_per_request: int = 256,
        attempts: int = 3,
        backoff_s: float = 1.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be the judge's HTTP root such as http://127.0.0.1:8081; got {url!r}")
        if max_completions_per_request < 2:
            raise ValueError(
                f"max_completions_per_request must be >= 2 (one group); got {max_completions_per_request}"
            )
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1; got {attempts}")
        self.url = url.rstrip("/").removesuffix("/v1/score_groups")
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.max_completions = max_completions_per_request
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.requests_sent = 0

    def chunks(self, groups: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Consecutive whole groups, each chunk within max_completions (a larger group goes alone)."""
        out: list[list[dict[str, Any]]] = []
        size = 0
        for g in groups:
            n = len(g["completions"])
            if not out or size + n > self.max_completions:
                out.append([])
                size = 0
            out[-1].append(g)
            size += n
        return out

    def score_groups(self, groups: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """One result per group, in order (see sgpo.judge.scoring.GroupScoreOut)."""
        results: list[dict[str, Any]] = []
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        with httpx.Client(timeout=self.timeout_s, headers=headers) as http:
            for chunk in self.chunks(groups):
                results.extend(self._post(http, chunk))
        return results

    def _post(self, http: httpx.Client, chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        endpoint = f"{self.url}/v1/score_groups"
        for attempt in range(1, self.attempts + 1):
            self.requests_sent += 1
            try:
                r = http.post(endpoint, json={"groups": chunk})
            except httpx.TransportError as e:
                if attempt == self.attempts:
                    raise ScoringError(f"{endpoint} unreachable after {attempt} attempt(s): {e!r}") from None
            else:
                if r.status_code == 200:
                    groups: list[dict[str, Any]] = r.json()["groups"]
                    if len(groups) != len(chunk):
                        raise ScoringError(f"{endpoint} answered {len(groups)} groups for {len(chunk)}")
                    return groups
                if r.status_code not in RETRY_STATUSES or attempt == self.attempts:
                    raise ScoringError(f"{endpoint} answered {r.status_code}: {_message(r)}")
            time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")


def _message(r: httpx.Response) -> str:
    try:
        err = r.json()["error"]
        return f"{err['message']}" + (f" (field {err['field']})" if err.get("field") else "")
    except (ValueError, KeyError, TypeError):
        return r.text[:500]
