"""Failpoints for crash tests: `SGPO_FAILPOINTS="checkpoint.written=2,publish.written=1"` SIGKILLs the process
(exactly what `kill -9` does) the N-th time it reaches that point. Inert unless the variable is set.

Points: checkpoint.before, checkpoint.written (temp folder complete, not yet renamed), checkpoint.renamed
(durable, groups not yet acknowledged), checkpoint.acked, publish.written, step.done (after an optimizer step).
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}
_plan: dict[str, int] | None = None


def _load_plan() -> dict[str, int]:
    plan: dict[str, int] = {}
    for item in os.environ.get("SGPO_FAILPOINTS", "").split(","):
        if item.strip():
            name, _, n = item.strip().partition("=")
            plan[name] = int(n or 1)
    return plan


def failpoint(name: str) -> None:
    global _plan
    if _plan is None:
        _plan = _load_plan()
    if name not in _plan:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _plan[name]:
        os.kill(os.getpid(), signal.SIGKILL)
