"""Held-out evaluation of the policy the generator is serving: answers (greedy or avg@k), verified, accuracy by difficulty."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sgpo.common.prompts import Prompter
from sgpo.tasks.accuracy import LevelItem
from sgpo.v1 import common_pb2, generator_pb2, verifier_pb2

EvalItem = LevelItem  # a held-out problem of the run's eval_problems.jsonl


def load_eval_items(path: Path, level_field: str = "steps") -> list[EvalItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(EvalItem(row["problem"], str(row["answer"]), str(row.get(level_field, "all"))))
    return items


def run_prompter(doc: dict[str, Any]) -> Prompter:
    """The prompter of a run config's `[orchestrator.prompt]` table: the one the run's orchestrator renders with."""
    from sgpo.common.prompts import PromptConfig, build_prompter

    return build_prompter(PromptConfig.model_validate(doc["orchestrator"].get("prompt", {})))


def evaluate_served_policy(
    generator: Any,
    verifier: Any,
    items: list[EvalItem],
    prompter: Prompter,
    max_tokens: int,
    batch: int = 128,
    timeout_s: float = 600.0,
    samples: int = 1,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """Accuracy per level (and overall), mean completion length in tokens, and the policy versions seen, of
    whatever the generator serves now.

    Greedy by default; with `temperature` > 0 the mean over `samples` completions per problem (avg@k), seeded
    so that two evaluations of the same weights agree. Problems are rendered by `prompter`, the one the run's
    orchestrator builds from the same `[orchestrator.prompt]` table, with its stop strings. The evaluator is
    `sgpo.tasks.accuracy`; here the generator and the verifier are the run's own services, reached over gRPC.
    """
    from sgpo.tasks.accuracy import accuracy_by_level

    sampling = common_pb2.SamplingParams(
        n=samples,
        temperature=temperature,
        top_p=1.0,
        max_tokens=max_tokens,
        seed=0,
        stop=prompter.with_stop(()),
    )

    def sample(chunk: list[int]) -> Sequence[Any]:
        prompts = [prompter.render(items[i].problem) for i in chunk]
        request = generator_pb2.GenerateRequest(prompts=prompts, sampling=sampling)
        return list(generator.Generate(request, timeout=timeout_s).results)

    def is_correct(pairs: list[tuple[EvalItem, Any]]) -> list[bool]:
        request = verifier_pb2.VerifyRequest(
            items=[verifier_pb2.VerifyItem(gold=it.answer, pred=c.text) for it, c in pairs]
        )
        verdicts = verifier.Verify(request, timeout=timeout_s).verdicts
        return [v.status == common_pb2.VERDICT_STATUS_CORRECT for v in verdicts]

    return accuracy_by_level(items, sample, is_correct, batch=batch)
