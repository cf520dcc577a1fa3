"""The one held-out evaluator: sample completions of problems in chunks, score them, tally accuracy by level.

Used by pretraining (`sgpo.tasks.pretrain`: the in-process engine, the exact `Answer: N` line), by `sgpo
train`'s held-out evaluation (`sgpo.launch.evaluate`: the served generator and verifier over gRPC) and by
`sgpo eval` (`sgpo.tasks.evaluate`: an in-process engine and `MathVerifier`, which adds pass@k and per-item
records on top of the same verdicts). The callers differ only in how a chunk is sampled and how a completion
is judged correct.

`sample_and_score` overlaps the two: a finished chunk is scored while the next ones are sampled (at most
`concurrency` sampling calls in flight, one scoring call at a time). `accuracy_by_level` adds the tally:
accuracy per level (the mean over every completion of the level's problems, i.e. avg@k with k samples per
problem), overall accuracy, mean completion length in tokens and the policy versions that produced them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

Out = TypeVar("Out")
Verdict = TypeVar("Verdict")


class Sampled(Protocol):
    """One problem's completions, as an engine (`PromptResult`) or the gRPC API (`GenerateResult`) gives them."""

    @property
    def completions(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class LevelItem:
    """A held-out problem: its text, its gold answer and its difficulty level (a label, e.g. "3")."""

    problem: str
    answer: str
    level: str


@dataclass
class Scored(Generic[Out, Verdict]):
    """What `sample_and_score` returns: per item index, what sampling gave and the verdict of every completion
    (items never sampled, e.g. prompts too long for the context, are absent from both)."""

    outputs: dict[int, Out]
    verdicts: dict[int, list[Verdict]]


def sample_and_score(
    chunks: Sequence[list[int]],
    sample: Callable[[list[int]], Sequence[Out]],
    score: Callable[[list[int], list[Out]], Sequence[Sequence[Verdict]]],
    concurrency: int = 1,
    on_sampled: Callable[[int], None] = lambda n: None,
) -> Scored[Out, Verdict]:
    """Sample every chunk of item indices (`sample(chunk)` returns one output per index), then score each
    chunk (`score(chunk, outputs)` returns each item's verdicts); scoring a chunk overlaps the sampling of the
    next ones. `on_sampled(n)` is called as chunks finish sampling. An exception cancels what is pending."""
    outputs: dict[int, Out] = {}
    verdicts: dict[int, list[Verdict]] = {}
    gen_futures: dict[Future[Sequence[Out]], list[int]] = {}
    ver_futures: list[tuple[list[int], Future[Sequence[Sequence[Verdict]]]]] = []
    with (
        ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="eval-sample") as gen_pool,
        ThreadPoolExecutor(1, thread_name_prefix="eval-score") as ver_pool,
    ):
        try:
            gen_futures = {gen_pool.submit(sample, chunk): chunk for chunk in chunks}
            for fut in as_completed(gen_futures):
                chunk, outs = gen_futures[fut], list(fut.result())
                if len(outs) != len(chunk):
                    raise ValueError(f"sampling returned {len(outs)} outputs for {len(chunk)} problems")
                for i, out in zip(chunk, outs, strict=True):
                    outputs[i] = out
                ver_futures.append((chunk, ver_pool.submit(score, chunk, outs)))
                on_sampled(len(chunk))
            for chunk, vfut in ver_futures:
                for i, vs in zip(chunk, vfut.result(), strict=True):
                    verdicts[i] = list(vs)
        except BaseException:
            for f in [*gen_futures, *(v for _, v in ver_futures)]:
                f.cancel()
            raise
    return Scored(outputs, verdicts)


def level_order(level: str) -> tuple[int, str]:
    """Levels in their natural order: "2" before "10"."""
    return (len(level), level)


def accuracy_by_level(
    items: Sequence[LevelItem],
    sample: Callable[[list[int]], Sequence[Sampled]],
    is_correct: Callable[[list[tuple[LevelItem, Any]]], Sequence[bool]],
    chunks: Sequence[list[int]] | None = None,
    batch: int = 128,
) -> dict[str, Any]:
    """Accuracy per level and overall of the completions `sample` draws for `items`.

    `sample(indices)` returns one `Sampled` per index (completions with `text`, `token_ids` and, where known,
    `policy_version`); `is_correct(pairs)` judges (item, completion) pairs. Items are sampled in `chunks` of
    indices (default: consecutive runs of `batch`). The result: `accuracy` {level: fraction}, `overall`, `n`
    (completions judged), `mean_tokens`, `policy_versions` (sorted) and `seconds`.
    """
    t0 = time.perf_counter()
    if chunks is None:
        chunks = [list(range(s, min(s + batch, len(items)))) for s in range(0, len(items), batch)]

    def score(chunk: list[int], outs: list[Sampled]) -> list[list[bool]]:
        pairs = [(items[i], c) for i, out in zip(chunk, outs, strict=True) for c in out.completions]
        flat = list(is_correct(pairs))
        if len(flat) != len(pairs):
            raise ValueError(f"scoring returned {len(flat)} verdicts for {len(pairs)} completions")
        per_item, pos = [], 0
        for out in outs:
            per_item.append(flat[pos : pos + len(out.completions)])
            pos += len(out.completions)
        return per_item

    scored = sample_and_score(chunks, sample, score)
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    versions: set[int] = set()
    tokens = 0
    for i, out in scored.outputs.items():
        level = items[i].level
        total[level] += len(out.completions)
        correct[level] += sum(scored.verdicts[i])
        tokens += sum(len(c.token_ids) for c in out.completions)
        versions.update(
            int(v) for c in out.completions if (v := getattr(c, "policy_version", None)) is not None
        )
    levels = sorted(total, key=level_order)
    n = sum(total.values())
    return {
        "accuracy": {lv: correct[lv] / total[lv] for lv in levels},
        "overall": sum(correct.values()) / max(1, n),
        "n": n,
        "mean_tokens": tokens / max(1, n),
        "policy_versions": sorted(versions),
        "seconds": time.perf_counter() - t0,
    }
