"""The judge's logic, transport-agnostic: validate a request, split responses into steps, ask the backend for
first errors, and measure each step (tokens when the response's token offsets are given, else characters).

The judge locates, core scores: rts and the colored reward are computed by `sgpo.core.coloring` from these
judgements (by the orchestrator with its AlgoConfig, by the HTTP API and the CLI with the request's coloring).
`build_judge(cfg)` gives a `StepJudge` for any backend; gRPC, HTTP and the CLI all call `judge()`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sgpo.common.server import ResourceExhaustedError
from sgpo.core import (
    ColoringParams,
    InvalidInputError,
    SplitMode,
    Step,
    StepJudgement,
    compute_step_token_counts,
    judgement_rts,
    segment_steps,
)
from sgpo.judge.config import CascadeBackend, JudgeConfig, LlmBackend, PrmBackend, SymbolicBackend
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.types import JudgeItem, Located, Locator

log = logging.getLogger(__name__)
CHARS_NOTE = "step lengths measured in characters (no token offsets given)"


class Judge:
    """A `StepJudge` over one backend (`Locator`). Thread-safe when its backend is (all of ours are).

    `coloring` is the server's default (its [algo] section): what HTTP and CLI callers are scored with when
    they send no overrides, and the rts unit of the judge's rts histogram.
    """

    def __init__(
        self,
        locator: Locator,
        *,
        coloring: ColoringParams | None = None,
        step_split: SplitMode = "auto",
        max_items: int = 256,
        max_steps: int = 512,
        metrics: JudgeMetrics | None = None,
        step_min_chars: int = 0,
        step_cap: int = 0,
    ) -> None:
        self.locator = locator
        self.name = locator.name
        self.coloring = coloring or ColoringParams()
        self.step_split = step_split
        self.max_items = max_items
        self.max_steps = max_steps
        self.metrics = metrics
        self.step_min_chars, self.step_cap = step_min_chars, step_cap

    def judge(
        self,
        problem: str,
        reference_solution: str,
        items: Sequence[JudgeItem],
    ) -> list[StepJudgement]:
        """One judgement per item, in order. Bad input raises InvalidInputError (naming the field) or
        ResourceExhaustedError (over a limit); a backend failure is a `failed` judgement, never a raise."""
        if len(items) > self.max_items:
            raise ResourceExhaustedError(
                f"items: {len(items)} responses in one request; at most {self.max_items} are accepted "
                "(split the batch or raise max_items in [judge])"
            )
        # An empty response (a policy that emitted only EOS or whitespace) is a wrong answer with no correct
        # prefix (no steps: rts 0), judged without the backend, so one empty sample never fails its group's coloring.
        empty = [not item.steps and not item.response.strip() for item in items]
        split = [
            [] if e else self._split(i, item) for i, (item, e) in enumerate(zip(items, empty, strict=True))
        ]
        asked = [k for k, e in enumerate(empty) if not e]
        located = (
            self.locator.locate(problem, reference_solution, [[s.text for s in split[k]] for k in asked])
            if asked
            else []
        )
        if len(located) != len(asked):  # a backend bug must not shift judgements onto the wrong responses
            raise RuntimeError(f"backend {self.name} answered {len(located)} of {len(asked)} responses")
        by_item = dict(zip(asked, located, strict=True))
        return [
            self._empty_judgement() if k not in by_item else self._judgement(items[k], split[k], by_item[k])
            for k in range(len(items))
        ]

    def _empty_judgement(self) -> StepJudgement:
        self._count(self.name, "empty_response", 0, 0.0)
        return StepJudgement(
            status="ok",
            steps=(),
            first_error_step=0,
            reason="empty response: nothing precedes the first error",
            backend=self.name,
        )

    def _split(self, i: int, item: JudgeItem) -> list[Step]:
        """The steps; their spans index `response` (0, 0 for pre-split steps, which have no response)."""
        field = f"items[{i}]"
        if item.response and item.steps:
            raise InvalidInputError(field, "give either `response` or `steps`, not both")
        if item.steps:
            if item.token_char_starts:
                raise InvalidInputError(
                    f"{field}.token_char_starts",
                    "index into `response`; send the response text instead of pre-split steps to measure in tokens",
                )
            for k, s in enumerate(item.steps):
                if not s.strip():
                    raise InvalidInputError(f"{field}.steps[{k}]", "is empty; every step needs some text")
            steps = [Step(s, 0, 0) for s in item.steps]
        else:
            if not item.response.strip():
                raise InvalidInputError(
                    f"{field}.response", "is empty; give the response text or its `steps`"
                )
            self._check_offsets(field, item)
            try:
                steps = segment_steps(
                    item.response, self.step_split, min_chars=self.step_min_chars, max_steps=self.step_cap
                )
            except InvalidInputError as e:
                raise InvalidInputError(f"{field}.response", e.message) from None
        if len(steps) > self.max_steps:
            raise ResourceExhaustedError(
                f"{field}: {len(steps)} steps; at most {self.max_steps} per response are accepted "
                "(raise max_steps in [judge])"
            )
        return steps

    @staticmethod
    def _check_offsets(field: str, item: JudgeItem) -> None:
        offsets, n = item.token_char_starts, len(item.response)
        for k, pos in enumerate(offsets):
            if (
                not 0 <= pos <= n
            ):  # == n: a token that adds no text (EOS, a stop string's tail) starts at the end
                raise InvalidInputError(
                    f"{field}.token_char_starts[{k}]",
                    f"must be a character offset in [0, {n}] of the response; got {pos}",
                )
            if k and pos < offsets[k - 1]:
                raise InvalidInputError(
                    f"{field}.token_char_starts[{k}]",
                    f"offsets must not decrease; got {pos} after {offsets[k - 1]}",
                )

    def _judgement(self, item: JudgeItem, steps: list[Step], loc: Located) -> StepJudgement:
        texts = tuple(s.text for s in steps)
        backend = loc.backend or self.name
        n = len(steps)
        if loc.first_error_step is None or not -1 <= loc.first_error_step < n:
            reason = loc.reason
            if loc.first_error_step is not None:
                reason = f"backend returned step {loc.first_error_step} for {n} steps ({loc.reason})"
            self._count(backend, "failed")
            return StepJudgement(status="failed", steps=texts, reason=reason, backend=backend)
        reason = loc.reason
        if item.token_char_starts:
            # A token belongs to the step whose span holds its first character.
            lengths = compute_step_token_counts(steps, item.token_char_starts)
        else:
            lengths = [len(s.text) if item.steps else s.end - s.start for s in steps]
            reason = f"{reason}; {CHARS_NOTE}"
        judgement = StepJudgement(
            status="ok",
            steps=texts,
            first_error_step=loc.first_error_step,
            step_lengths=tuple(lengths),
            reason=reason,
            backend=backend,
        )
        rts = judgement_rts(judgement, self.coloring.rts_unit)  # also rejects lengths that sum to zero
        self._count(
            backend, "no_error" if loc.first_error_step == -1 else "error_found", loc.first_error_step, rts
        )
        return judgement

    def _count(self, backend: str, outcome: str, first_error: int = -1, rts: float | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.judgements.labels(backend.split(":")[0], outcome).inc()
        if first_error >= 0:
            self.metrics.first_error_step.observe(first_error)
        if rts is not None:
            self.metrics.rts.observe(rts)

    def stats(self) -> dict[str, float]:
        """Counters of the backend (LLM calls, cache hits, calls the cascade saved), for reports."""
        stats = getattr(self.locator, "stats", None)
        return dict(stats()) if callable(stats) else {}

    def close(self) -> None:
        self.locator.close()


def build_locator(
    backend: SymbolicBackend | LlmBackend | PrmBackend | CascadeBackend, metrics: JudgeMetrics | None = None
) -> Locator:
    """The backend a config names; heavy imports (httpx, torch, transformers) happen only for that one."""
    if isinstance(backend, SymbolicBackend):
        from sgpo.judge.symbolic import SymbolicLocator

        return SymbolicLocator(backend)
    if isinstance(backend, LlmBackend):
        from sgpo.judge.llm import LlmLocator

        return LlmLocator(backend, metrics)
    if isinstance(backend, PrmBackend):
        from sgpo.judge.prm import PrmLocator

        return PrmLocator(backend)
    from sgpo.judge.cascade import CascadeLocator

    return CascadeLocator(backend, metrics)


def build_judge(cfg: JudgeConfig, metrics: JudgeMetrics | None = None) -> Judge:
    """The configured judge, usable in-process (no server needed)."""
    locator = build_locator(cfg.backend, metrics)
    if cfg.noise > 0:
        from sgpo.judge.noise import NoisyLocator

        log.warning("judge noise ablation on: %.0f%% of first errors are random steps", 100 * cfg.noise)
        locator = NoisyLocator(locator, cfg.noise, cfg.noise_seed)
    return Judge(
        locator,
        coloring=cfg.algo.coloring,
        step_split=cfg.algo.step_split,
        max_items=cfg.max_items,
        max_steps=cfg.max_steps,
        metrics=metrics,
        step_min_chars=cfg.step_min_chars,
        step_cap=cfg.step_cap,
    )
