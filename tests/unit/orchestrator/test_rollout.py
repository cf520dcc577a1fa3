"""Scoring a generated group: coloring only where needed, judge failures counted, DAPO filtering."""

from __future__ import annotations

import pytest

from sgpo.core import AlgoConfig, Completion, StepJudgement, Verdict, compute_colored_reward
from sgpo.orchestrator.dataset import Prompt
from sgpo.orchestrator.rollout import build_group, score

PROMPT = Prompt("p1", "Start with 7. Add 5.", "12", "Step 1: 7 + 5 = 12\nAnswer: 12")


def completions(n: int) -> list[Completion]:
    return [
        Completion(
            f"Step 1: 7 + 5 = {10 + i}\nAnswer: {10 + i}", (1, 2, 3), (-0.1, -0.2, -0.3), policy_version=3
        )
        for i in range(n)
    ]


def judgement(first_error: int, rts: float) -> StepJudgement:
    return StepJudgement("ok", ("a", "b"), first_error, rts, 0.0, backend="test")


class RecordingJudge:
    """The judge boundary: returns scripted judgements and records which completions it was asked about."""

    def __init__(self, result: list[StepJudgement | None] | None) -> None:
        self.result, self.calls = result, []

    def __call__(self, indices: list[int]) -> list[StepJudgement | None]:
        self.calls.append(indices)
        return self.result[: len(indices)] if self.result is not None else [None] * len(indices)


def build(statuses: list[str], judge: RecordingJudge, cfg: AlgoConfig, **kw: bool):  # type: ignore[no-untyped-def]
    verdicts = [Verdict(s) for s in statuses]  # type: ignore[arg-type]
    return build_group(
        PROMPT,
        "prompt",
        [1, 2],
        completions(len(statuses)),
        verdicts,
        judge,
        cfg,
        run_id="r",
        timings={},
        **kw,
    )


def test_all_negative_group_is_judged_and_colored_with_rts_rewards() -> None:
    judge = RecordingJudge([judgement(0, 0.0), judgement(1, 0.5), judgement(-1, 0.5), judgement(0, 0.0)])
    group, dropped, uncolorable = build(["wrong"] * 4, judge, AlgoConfig())
    assert judge.calls == [[0, 1, 2, 3]] and dropped is None and not uncolorable
    assert group is not None and group.colored and group.kind == "all_negative"
    assert group.rewards[1] == pytest.approx(compute_colored_reward(0.5))
    assert group.advantages[1] > 0 > group.advantages[0]
    assert "judge" in group.timings and group.policy_version == 3


def test_mixed_group_is_not_judged_under_all_negative_scope() -> None:
    judge = RecordingJudge([])
    group, _, _ = build(["correct", "wrong", "wrong"], judge, AlgoConfig())
    assert judge.calls == [] and group is not None and not group.colored
    assert group.rewards == (1.0, 0.0, 0.0)


def test_grpo_never_calls_the_judge() -> None:
    judge = RecordingJudge([])
    group, _, _ = build(["wrong"] * 3, judge, AlgoConfig(algo="grpo"))
    assert judge.calls == [] and group is not None and group.advantages == (0.0, 0.0, 0.0)


def test_judge_failure_leaves_group_uncolored_and_flagged() -> None:
    group, _, uncolorable = build(["wrong"] * 3, RecordingJudge(None), AlgoConfig())
    assert uncolorable and group is not None and not group.colored
    assert group.advantages == (0.0, 0.0, 0.0)


def test_failed_judgement_status_counts_as_failure() -> None:
    judge = RecordingJudge([judgement(0, 0.0), StepJudgement("failed", reason="unparseable")])
    group, _, uncolorable = build(["wrong", "wrong"], judge, AlgoConfig())
    assert uncolorable and group is not None and not group.colored


def test_dapo_drops_zero_and_full_accuracy_groups() -> None:
    cfg = AlgoConfig(algo="dapo")
    assert build(["wrong"] * 3, RecordingJudge([]), cfg)[1] == "filtered"
    assert build(["correct"] * 3, RecordingJudge([]), cfg)[1] == "filtered"
    group, dropped, _ = build(["correct", "wrong", "wrong"], RecordingJudge([]), cfg)
    assert dropped is None and group is not None


def test_recording_judges_every_wrong_answer_and_replay_rescoring_switches_algorithm() -> None:
    judge = RecordingJudge([judgement(0, 0.0), judgement(1, 0.5)])
    group, _, _ = build(["correct", "wrong", "wrong"], judge, AlgoConfig(algo="grpo"), judge_all_wrong=True)
    assert judge.calls == [[1, 2]] and group is not None and not group.colored
    colored, _ = score(group, AlgoConfig(color_scope="all_incorrect"))
    assert colored.colored and colored.rewards[2] == pytest.approx(compute_colored_reward(0.5))
    assert colored.algo == "sgpo"
