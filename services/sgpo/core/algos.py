"""The algorithms: one small class each, behind a registry; every scoring decision of a group lives here.

Each answers two questions for one group of completions:
- `judge_mask(statuses)`: which completions need a judgement (the judge only locates first errors);
- `score(statuses, judgements)`: rewards, advantages, kind, colored / uncolorable, and keep or drop.
The orchestrator does the I/O around them (`get_algorithm(cfg)`); the trainer never sees the algorithm.

GRPO: 0/1 rewards, A = (r - mean) / (std + eps). Dr.GRPO: the same without the std division. DAPO: GRPO
plus dynamic sampling (groups whose accuracy is 0 or 1 are dropped). SGPO: GRPO plus coloring of wrong
answers (of all-negative groups, or of every group with color_scope = "all_incorrect") with
r_max * sigmoid(beta * (rts - gamma)) (`sgpo.core.coloring`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from sgpo.core.advantages import classify_group, compute_group_advantages, keep_for_dynamic_sampling
from sgpo.core.coloring import compute_colored_reward, judgement_rts
from sgpo.core.config import AlgoConfig, ColorScope
from sgpo.core.errors import InvalidInputError
from sgpo.core.types import Algo, GroupKind, StepJudgement, VerdictStatus

FILTERED = "filtered"  # the drop reason of a group dynamic sampling rejects


@dataclass(frozen=True, slots=True)
class GroupScore:
    """How one group is scored: what the orchestrator writes into its `Group`, and whether to keep it."""

    rewards: tuple[float, ...]
    advantages: tuple[float, ...]
    kind: GroupKind
    colored: bool = False
    """At least one completion got a colored reward."""
    uncolorable: bool = False
    """Coloring was needed but a judgement was missing or failed: the group kept plain 0/1 rewards."""
    drop_reason: str = ""
    """Empty: keep the group; "filtered": dynamic sampling drops it (scored anyway, for the counters)."""

    @property
    def keep(self) -> bool:
        return not self.drop_reason


def select_for_coloring(statuses: Sequence[VerdictStatus], scope: ColorScope) -> list[bool]:
    """The wrong answers of an all-negative group (scope all_negative), or of any group (all_incorrect)."""
    if scope == "all_negative" and classify_group(statuses) != "all_negative":
        return [False] * len(statuses)
    return [s == "wrong" for s in statuses]


class Algorithm:
    """GRPO's scoring; subclasses change one decision each. Built by `get_algorithm(cfg)`."""

    name: ClassVar[Algo]
    dynamic_sampling_default: ClassVar[bool] = False
    """Whether groups of accuracy 0 or 1 are dropped when AlgoConfig.dynamic_sampling is left unset."""

    def __init__(self, cfg: AlgoConfig) -> None:
        self.cfg = cfg

    @property
    def std_normalize(self) -> bool:
        return self.cfg.std_normalize

    @property
    def uses_dynamic_sampling(self) -> bool:
        ds = self.cfg.dynamic_sampling
        return self.dynamic_sampling_default if ds is None else ds

    def needs_judgement(self, statuses: Sequence[VerdictStatus]) -> list[bool]:
        """Which completions this algorithm colors (and so needs judged): none, but for SGPO."""
        return [False] * len(statuses)

    def judge_mask(self, statuses: Sequence[VerdictStatus], *, record: bool = False) -> list[bool]:
        """Which completions to send to the judge. `record`: every wrong answer, so a recorded group can
        later be replayed under any algorithm or color scope."""
        if record:
            return [s == "wrong" for s in statuses]
        return self.needs_judgement(statuses)

    def score(
        self,
        statuses: Sequence[VerdictStatus],
        judgements: Sequence[StepJudgement | None] | None = None,
    ) -> GroupScore:
        """Score one group. `judgements[i]` is completion i's judgement, None where it was not judged.

        A completion that needs coloring but has no successful judgement leaves the whole group uncolored
        (plain 0/1 rewards) and flagged `uncolorable`: a judge failure never invents a reward.
        """
        n = len(statuses)
        if n < 2:
            raise InvalidInputError("completions", f"a group needs at least 2 completions; got {n}")
        judged: Sequence[StepJudgement | None] = judgements if judgements else (None,) * n
        if len(judged) != n:
            raise InvalidInputError(
                "judgements", f"needs one entry per completion or none; got {len(judged)} for {n}"
            )
        rewards = [1.0 if s == "correct" else 0.0 for s in statuses]
        wanted = self.needs_judgement(statuses)
        colored = uncolorable = False
        if any(wanted):
            if all(j is not None and j.status == "ok" for j, w in zip(judged, wanted, strict=True) if w):
                params = self.cfg.coloring
                for i, (j, w) in enumerate(zip(judged, wanted, strict=True)):
                    if w and j is not None:
                        rewards[i] = compute_colored_reward(judgement_rts(j, params.rts_unit), params)
                colored = True
            else:
                uncolorable = True
        advantages = compute_group_advantages(
            rewards,
            std_normalize=self.std_normalize,
            eps=self.cfg.adv_eps,
            mask=[s != "unscorable" for s in statuses],
        )
        drop = FILTERED if self.uses_dynamic_sampling and not keep_for_dynamic_sampling(statuses) else ""
        return GroupScore(
            tuple(rewards), tuple(advantages), classify_group(statuses), colored, uncolorable, drop
        )


class Grpo(Algorithm):
    """GRPO: 0/1 rewards, std-normalized group-relative advantages (std_normalize = false: Dr.GRPO's)."""

    name = "grpo"


class DrGrpo(Algorithm):
    """Dr.GRPO: advantages r - mean(r), never divided by the group's std."""

    name = "drgrpo"

    @property
    def std_normalize(self) -> bool:
        return False


class Dapo(Algorithm):
    """DAPO: GRPO with dynamic sampling on by default (decided on verifier accuracy, never on a colored reward)."""

    name = "dapo"
    dynamic_sampling_default = True


class Sgpo(Algorithm):
    """SGPO: GRPO plus colored rewards for the wrong answers `color_scope` selects."""

    name = "sgpo"

    def needs_judgement(self, statuses: Sequence[VerdictStatus]) -> list[bool]:
        return select_for_coloring(statuses, self.cfg.color_scope)


ALGORITHMS: dict[str, type[Algorithm]] = {cls.name: cls for cls in (Grpo, DrGrpo, Dapo, Sgpo)}


def get_algorithm(cfg: AlgoConfig) -> Algorithm:
    """The algorithm `cfg.algo` names, configured by `cfg`."""
    try:
        cls = ALGORITHMS[cfg.algo]
    except KeyError:
        raise InvalidInputError("algo", f"must be one of {sorted(ALGORITHMS)}; got {cfg.algo!r}") from None
    return cls(cfg)
