"""`ColoredReward`: SGPO's rewards as a reward function of TRL's `GRPOTrainer` (docs/integrations.md#trl).

    from sgpo.integrations.trl import ColoredReward
    trainer = GRPOTrainer(model=..., reward_funcs=[ColoredReward(url="http://judge:8081", api_key=KEY,
                          num_generations=8)], args=GRPOConfig(num_generations=8, ...), train_dataset=ds)

TRL's contract (trl 1.16, `GRPOTrainer._calculate_rewards`), read 2026-12-07: the function is called with
keyword arguments `prompts`, `completions` (strings, or lists of messages for conversational data),
`completion_ids`, every dataset column but `prompt` (one value per completion), `trainer_state`, `log_extra`
and `log_metric`; it returns one float per completion, or None for "no reward" (TRL leaves it out of the
group statistics). TRL's sampler repeats each prompt `num_generations` times in a row and computes group
advantages over consecutive blocks of `num_generations`, so the groups are rebuilt from those blocks; this
process's slice must hold whole groups (see `groups_of`).

Rewards: 1 correct, 0 wrong, the colored reward of sgpo.core for the wrong answers of all-negative groups (the
judge's [algo] color_scope), None for an unscorable answer. Nothing here imports TRL or torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sgpo.integrations.client import ScoringClient

log = logging.getLogger(__name__)


def text_of(x: Any) -> str:
    """A completion or prompt as text: a string as is; a conversation (list of messages): its last message's
    content (the assistant's reply for a completion, the user's question for a prompt)."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict) and "content" in x[-1]:
        content = x[-1]["content"]
        if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, ...]
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    raise TypeError(
        f"expected a string or a list of chat messages with 'content'; got {type(x).__name__}: {str(x)[:80]!r}"
    )


def groups_of(keys: Sequence[Any], num_generations: int | None) -> list[range]:
    """The groups of TRL's batch: runs of equal consecutive keys, cut into blocks of `num_generations`.

    TRL repeats each prompt `num_generations` times in a row; the same prompt drawn twice in a row makes a run of
    2 x num_generations, two groups. A block of any other size means this process holds part of a group (its
    other samples are on another process): coloring would decide "all-negative" on half a group, so it raises.
    An evaluation with another `num_generations_eval` needs its own ColoredReward (or num_generations=None).
    """
    out: list[range] = []
    start = 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            step = num_generations or (i - start)
            for s in range(start, i, step):
                out.append(range(s, min(s + step, i)))
            start = i
    if num_generations:
        bad = [len(r) for r in out if len(r) != num_generations]
    else:  # one completion per prompt everywhere (an evaluation with one generation) is fine: scored, not colored
        bad = [len(r) for r in out if len(r) < 2] if any(len(r) > 1 for r in out) else []
    if bad:
        need = f"{num_generations}" if num_generations else "at least 2"
        raise ValueError(
            f"ColoredReward found groups of {sorted(set(bad))} completions where {need} are needed: each process "
            "must hold whole groups. Make per_device_train_batch_size * steps_per_generation a multiple of "
            "num_generations, and pass ColoredReward(num_generations=...) equal to GRPOConfig.num_generations."
        )
    return out


@dataclass
class BatchStats:
    """What one call scored: kept in `ColoredReward.history` and logged through TRL's `log_metric`."""

    groups: int
    all_negative: int
    colored: int
    uncolorable: int
    verifier_rewards: list[float | None]
    rewards: list[float | None]
    judge_errors: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        colored = [
            r
            for r, v in zip(self.rewards, self.verifier_rewards, strict=True)
            if r is not None and v == 0.0 and r > 0.0
        ]
        scored = [r for r in self.rewards if r is not None]
        plain = [r for r in self.verifier_rewards if r is not None]
        return {
            "sgpo/all_negative_frac": self.all_negative / self.groups,
            "sgpo/colored_frac": self.colored / self.groups,
            "sgpo/colored_of_all_negative": self.colored / self.all_negative if self.all_negative else 0.0,
            "sgpo/uncolorable_groups": float(self.uncolorable),
            "sgpo/colored_reward_mean": sum(colored) / len(colored) if colored else 0.0,
            "sgpo/reward_before_coloring": sum(plain) / len(plain) if plain else 0.0,
            "sgpo/reward_after_coloring": sum(scored) / len(scored) if scored else 0.0,
        }


class ColoredReward:
    """A TRL reward function that scores each group through the judge's `/v1/score_groups`.

    Args:
        url: the judge's HTTP root (`http://host:port`), with [judge.scoring] verifier set.
        api_key: one of the judge's api_keys (sent as X-API-Key).
        num_generations: GRPOConfig.num_generations; checks that groups are whole (recommended).
        answer_column: dataset column with the gold answer of each prompt.
        problem_column: dataset column with the problem shown to the judge; when the dataset lacks it, the prompt
            (its last user message for conversational data).
        reference_column: dataset column with a reference solution (optional; the judge uses it when present).
        unscorable_reward: reward of an answer the verifier could not score; None lets TRL leave it out.
        max_completions_per_request: at most the judge's max_items.
    """

    __name__ = "colored_reward"  # TRL logs rewards/colored_reward/mean

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        num_generations: int | None = None,
        answer_column: str = "answer",
        problem_column: str = "problem",
        reference_column: str = "reference_solution",
        unscorable_reward: float | None = None,
        timeout_s: float = 600.0,
        max_completions_per_request: int = 256,
    ) -> None:
        if num_generations is not None and num_generations < 2:
            raise ValueError(
                f"GRPO needs at least 2 generations per prompt; got num_generations={num_generations}"
            )
        self.client = ScoringClient(
            url, api_key=api_key, timeout_s=timeout_s, max_completions_per_request=max_completions_per_request
        )
        self.num_generations = num_generations
        self.answer_column = answer_column
        self.problem_column = problem_column
        self.reference_column = reference_column
        self.unscorable_reward = unscorable_reward
        self.history: list[BatchStats] = []

    def __call__(
        self,
        prompts: list[Any],
        completions: list[Any],
        log_metric: Callable[[str, float], None] | None = None,
        log_extra: Callable[[str, list[Any]], None] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        if self.answer_column not in kwargs:
            columns = sorted(
                k for k in kwargs if k not in ("completion_ids", "trainer_state", "environments")
            )
            raise ValueError(
                f"ColoredReward needs the gold answer of each prompt in a dataset column {self.answer_column!r}; "
                f"the dataset has {columns}. Add the column or pass answer_column=..."
            )
        answers = [str(a) for a in kwargs[self.answer_column]]
        problems = (
            [str(p) for p in kwargs[self.problem_column]]
            if self.problem_column in kwargs
            else [text_of(p) for p in prompts]
        )
        references = kwargs.get(self.reference_column) or [""] * len(prompts)
        texts = [text_of(c) for c in completions]
        keys = [(text_of(p), a) for p, a in zip(prompts, answers, strict=True)]
        spans = groups_of(keys, self.num_generations)
        request = [
            {
                "problem": problems[r.start],
                "answer": answers[r.start],
                "reference_solution": str(references[r.start] or ""),
                "completions": [texts[i] for i in r],
            }
            for r in spans
        ]
        scored = self.client.score_groups(request)
        rewards: list[float | None] = [None] * len(completions)
        plain: list[float | None] = [None] * len(completions)
        verdicts, rts, first_error = (
            [""] * len(completions),
            [None] * len(completions),
            [None] * len(completions),
        )
        errors = []
        for r, g in zip(spans, scored, strict=True):
            if g.get("judge_error"):
                errors.append(g["judge_error"])
            for i, c in zip(r, g["completions"], strict=True):
                unscorable = c["verdict"] == "unscorable"
                rewards[i] = self.unscorable_reward if unscorable else float(c["reward"])
                plain[i] = self.unscorable_reward if unscorable else float(c["verdict"] == "correct")
                verdicts[i], rts[i], first_error[i] = c["verdict"], c["rts"], c["first_error_step"]
        stats = BatchStats(
            groups=len(scored),
            all_negative=sum(g["kind"] == "all_negative" for g in scored),
            colored=sum(bool(g["colored"]) for g in scored),
            uncolorable=sum(bool(g["uncolorable"]) for g in scored),
            verifier_rewards=plain,
            rewards=rewards,
            judge_errors=errors,
        )
        self.history.append(stats)
        if errors:
            log.warning(
                "%d of %d groups left uncolored (judge failures); first: %s",
                len(errors),
                len(scored),
                errors[0],
            )
        if log_metric is not None:
            for name, value in stats.metrics().items():
                log_metric(name, value)
        if log_extra is not None:
            log_extra("sgpo_verdict", verdicts)
            log_extra("sgpo_rts", rts)
            log_extra("sgpo_first_error_step", first_error)
        return rewards
