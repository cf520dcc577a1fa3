"""Turning one prompt's completions into a scored `Group`, online or from a recording.

Rewards and advantages come from `sgpo.core`; colored rewards are recomputed from the judge's rts with this
run's AlgoConfig, so online, recorded and replayed groups are scored by exactly the same code.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace

from sgpo.core import (
    AlgoConfig,
    Completion,
    Group,
    StepJudgement,
    Verdict,
    VerdictStatus,
    compute_colored_reward,
    compute_group_scores,
    keep_for_dynamic_sampling,
    select_for_coloring,
)
from sgpo.orchestrator.dataset import Prompt

# judge(indices of completions to judge) -> one judgement per index, or None where the judge failed
JudgeFn = Callable[[list[int]], list[StepJudgement | None]]


def colored_rewards(
    judgements: Sequence[StepJudgement | None], wanted: Sequence[bool], cfg: AlgoConfig
) -> list[float | None]:
    out: list[float | None] = []
    for j, w in zip(judgements, wanted, strict=True):
        ok = w and j is not None and j.status == "ok"
        out.append(
            compute_colored_reward(j.rts, beta=cfg.beta, gamma=cfg.gamma, r_max=cfg.r_max)
            if ok and j
            else None
        )
    return out


def judge_scope(statuses: Sequence[VerdictStatus], cfg: AlgoConfig, judge_all_wrong: bool) -> list[bool]:
    if judge_all_wrong:  # recording: judge every wrong answer so a replay can use any algorithm or scope
        return [s == "wrong" for s in statuses]
    if cfg.algo != "sgpo":
        return [False] * len(statuses)
    return select_for_coloring(statuses, cfg.color_scope)


def score(group: Group, cfg: AlgoConfig) -> tuple[Group, bool]:
    """(group with rewards/advantages/kind/colored set by `cfg`, uncolorable flag)."""
    statuses = [v.status for v in group.verdicts]
    judgements = group.judgements or (None,) * len(statuses)
    wanted = select_for_coloring(statuses, cfg.color_scope) if cfg.algo == "sgpo" else [False] * len(statuses)
    scores = compute_group_scores(statuses, colored_rewards(judgements, wanted, cfg), cfg)
    scored = replace(
        group,
        rewards=tuple(scores.rewards),
        advantages=tuple(scores.advantages),
        kind=scores.kind,
        colored=scores.colored,
        algo=cfg.algo,
    )
    return scored, scores.uncolorable


def build_group(
    prompt: Prompt,
    prompt_text: str,
    prompt_token_ids: Sequence[int],
    completions: Sequence[Completion],
    verdicts: Sequence[Verdict],
    judge: JudgeFn,
    cfg: AlgoConfig,
    *,
    run_id: str,
    timings: dict[str, float],
    judge_all_wrong: bool = False,
) -> tuple[Group | None, str | None, bool]:
    """(group, or None if dynamic sampling drops it; drop reason; uncolorable)."""
    statuses = [v.status for v in verdicts]
    wanted = judge_scope(statuses, cfg, judge_all_wrong)
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
    group, uncolorable = score(group, cfg)
    if cfg.uses_dynamic_sampling and not keep_for_dynamic_sampling(statuses):
        return None, "filtered", uncolorable
    return group, None, uncolorable
