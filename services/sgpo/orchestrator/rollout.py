"""Turning one prompt's completions into a scored `Group`, online or from a recording: I/O around
`sgpo.core.algos`, which decides what is judged and how the group is scored.

Online, recorded and replayed groups are scored by the same call (`Algorithm.score`), from the verdicts and
the judge's first errors and step lengths, with this run's AlgoConfig.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sgpo.core import (
    Algorithm,
    Completion,
    Group,
    GroupScore,
    StepJudgement,
    Verdict,
)
from sgpo.orchestrator.dataset import Prompt

# judge(indices of completions to judge) -> one judgement per index, or None where the judge failed
JudgeFn = Callable[[list[int]], list[StepJudgement | None]]


@dataclass(frozen=True, slots=True)
class ScoredGroup:
    """A group with its rewards and advantages set, and how it was scored (uncolorable, kept or dropped)."""

    group: Group
    score: GroupScore


def score(group: Group, algorithm: Algorithm) -> ScoredGroup:
    """`group` with rewards, advantages, kind and colored set by `algorithm` from its verdicts and judgements."""
    result = algorithm.score([v.status for v in group.verdicts], group.judgements)
    scored = replace(
        group,
        rewards=result.rewards,
        advantages=result.advantages,
        kind=result.kind,
        colored=result.colored,
        algo=algorithm.name,
    )
    return ScoredGroup(scored, result)


def build_group(
    prompt: Prompt,
    prompt_text: str,
    prompt_token_ids: Sequence[int],
    completions: Sequence[Completion],
    verdicts: Sequence[Verdict],
    judge: JudgeFn,
    algorithm: Algorithm,
    *,
    run_id: str,
    timings: dict[str, float],
    judge_all_wrong: bool = False,
) -> ScoredGroup:
    """Judge what `algorithm` asks for (every wrong answer with `judge_all_wrong`, when recording), then score.

    The result's `score.keep` is False when dynamic sampling drops the group (`score.drop_reason` says why).
    """
    wanted = algorithm.judge_mask([v.status for v in verdicts], record=judge_all_wrong)
    judgements: list[StepJudgement | None] = [None] * len(completions)
    if any(wanted):
        t0 = time.perf_counter()
        indices = [i for i, w in enumerate(wanted) if w]
        for i, j in zip(indices, judge(indices), strict=True):
            judgements[i] = j
        timings = {**timings, "judge": time.perf_counter() - t0}
    group = Group(
        group_id=uuid.uuid4().hex,
        run_id=run_id,
        prompt_id=prompt.prompt_id,
        problem=prompt.problem,
        prompt_text=prompt_text,
        prompt_token_ids=tuple(prompt_token_ids),
        answer=prompt.answer,
        reference_solution=prompt.solution,
        completions=tuple(completions),
        verdicts=tuple(verdicts),
        judgements=tuple(judgements),
        rewards=(0.0,) * len(completions),
        advantages=(0.0,) * len(completions),
        kind="unscorable",
        policy_version=min((c.policy_version for c in completions), default=0),
        timings=timings,
        created_unix_ms=int(time.time() * 1000),
    )
    return score(group, algorithm)
