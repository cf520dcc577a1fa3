"""Held-out evaluation of the policy the generator is serving: answers (greedy or avg@k), verified, accuracy by difficulty."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgpo.v1 import common_pb2, generator_pb2, verifier_pb2


@dataclass(frozen=True)
class EvalItem:
    problem: str
    answer: str
    level: str


def load_eval_items(path: Path, level_field: str = "steps") -> list[EvalItem]:
    items = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            items.append(EvalItem(row["problem"], str(row["answer"]), str(row.get(level_field, "all"))))
    return items


def evaluate_served_policy(
    generator: Any,
    verifier: Any,
    items: list[EvalItem],
    prompt_template: str,
    max_tokens: int,
    batch: int = 128,
    timeout_s: float = 600.0,
    samples: int = 1,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """Accuracy per level (and overall), mean completion length in tokens, and the policy versions seen, of
    whatever the generator serves now.

    Greedy by default; with `temperature` > 0 the mean over `samples` completions per problem (avg@k), seeded
    so that two evaluations of the same weights agree.
    """
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    versions: set[int] = set()
    tokens = 0
    t0 = time.perf_counter()
    sampling = common_pb2.SamplingParams(
        n=samples, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=0
    )
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        prompts = [prompt_template.replace("{problem}", it.problem) for it in chunk]
        gen = generator.Generate(
            generator_pb2.GenerateRequest(prompts=prompts, sampling=sampling), timeout=timeout_s
        )
        pairs = [(it, c) for it, r in zip(chunk, gen.results, strict=True) for c in r.completions]
        versions.update(c.policy_version for _, c in pairs)
        tokens += sum(len(c.token_ids) for _, c in pairs)
        ver = verifier.Verify(
            verifier_pb2.VerifyRequest(
                items=[verifier_pb2.VerifyItem(gold=it.answer, pred=c.text) for it, c in pairs]
            ),
            timeout=timeout_s,
        )
        for (it, _), v in zip(pairs, ver.verdicts, strict=True):
            total[it.level] += 1
            correct[it.level] += int(v.status == common_pb2.VERDICT_STATUS_CORRECT)
    levels = sorted(total, key=lambda s: (len(s), s))
    return {
        "accuracy": {lv: correct[lv] / total[lv] for lv in levels},
        "overall": sum(correct.values()) / max(1, sum(total.values())),
        "n": sum(total.values()),
        "mean_tokens": tokens / max(1, sum(total.values())),
        "policy_versions": sorted(versions),
        "seconds": time.perf_counter() - t0,
    }
