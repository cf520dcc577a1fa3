"""Judge-noise ablation: a `Locator` wrapper that replaces the first-error index by a random one.

For a fraction `p` of responses (decided per response, not per call) the inner backend's answer is replaced by
a step drawn uniformly from the response's steps, so a run can measure whether SGPO degrades gracefully to
GRPO as its judge gets worse (the judge-noise study). The draw is seeded by (seed, problem, steps), so the same response
gets the same noise whatever the batching, retries or order of calls. Never for production: it is off
(p = 0) by default and the judge logs a warning when it is on.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from sgpo.core import InvalidInputError
from sgpo.judge.types import Located, Locator


class NoisyLocator:
    """`inner`, except that each response's first error is, with probability `p`, a uniformly random step."""

    def __init__(self, inner: Locator, p: float, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise InvalidInputError("noise", f"is a probability in [0, 1]; got {p}")
        self.inner, self.p, self.seed = inner, p, seed
        self.name = f"{inner.name}+noise{p:g}"

    def _rng(self, problem: str, steps: Sequence[str]) -> random.Random:
        h = hashlib.sha256(f"{self.seed}\0{problem}\0".encode() + "\0".join(steps).encode()).digest()
        return random.Random(int.from_bytes(h[:8], "little"))

    def locate(
        self, problem: str, reference_solution: str, step_lists: Sequence[Sequence[str]]
    ) -> list[Located]:
        located = self.inner.locate(problem, reference_solution, step_lists)
        out = []
        for steps, loc in zip(step_lists, located, strict=True):
            rng = self._rng(problem, steps)
            if steps and rng.random() < self.p:
                k = rng.randrange(len(steps))
                loc = Located(k, f"noise: random first error {k} replaced '{loc.reason}'", self.name)
            out.append(loc)
        return out

    def stats(self) -> dict[str, int]:
        stats = getattr(self.inner, "stats", None)
        return dict(stats()) if callable(stats) else {}

    def close(self) -> None:
        self.inner.close()
