"""The `cascade` backend: the symbolic checker first, the LLM only where the arithmetic is clean.

A false arithmetic claim at step k is a real error, so the cascade takes it without asking the LLM (an earlier
non-arithmetic error could still exist; the symbolic index is then an upper bound). Every response with no
false claim, including those with no arithmetic at all, goes to the LLM. The calls this saves are counted.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from sgpo.judge.config import CascadeBackend
from sgpo.judge.llm import LlmLocator
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.symbolic import SymbolicLocator
from sgpo.judge.types import Located


class CascadeLocator:
    name = "cascade"

    def __init__(self, cfg: CascadeBackend, metrics: JudgeMetrics | None = None) -> None:
        self.symbolic = SymbolicLocator(cfg.symbolic)
        self.llm = LlmLocator(cfg.llm, metrics, table="[judge.backend.llm]")
        self.metrics = metrics
        self._lock = threading.Lock()
        self._judged = self._saved = 0

    def locate(
        self, problem: str, reference_solution: str, step_lists: Sequence[Sequence[str]]
    ) -> list[Located]:
        first = self.symbolic.locate(problem, reference_solution, step_lists)
        ask = [i for i, r in enumerate(first) if r.first_error_step == -1]
        answers = self.llm.locate(problem, reference_solution, [step_lists[i] for i in ask])
        out = [
            Located(r.first_error_step, f"symbolic: {r.reason}", "cascade:symbolic", r.claims_checked)
            for r in first
        ]
        for i, a in zip(ask, answers, strict=True):
            out[i] = Located(a.first_error_step, f"{a.reason} (symbolic: {first[i].reason})", "cascade:llm")
        saved = len(step_lists) - len(ask)
        with self._lock:
            self._judged += len(step_lists)
            self._saved += saved
        if self.metrics is not None and saved:
            self.metrics.cascade_llm_calls_saved.inc(saved)
        return out

    def stats(self) -> dict[str, float]:
        with self._lock:
            own = {"cascade_judged": self._judged, "cascade_llm_calls_saved": self._saved}
        return {**self.llm.stats(), **own}

    def close(self) -> None:
        self.llm.close()
