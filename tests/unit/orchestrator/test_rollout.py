"""Scoring a generated group: coloring only where needed, judge failures flagged, DAPO filtering."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgpo.core import AlgoConfig, Completion, StepJudgement, Verdict, compute_colored_reward, get_algorithm
from sgpo.orchestrator.dataset import Prompt
from sgpo.orchestrator.rollout import ScoredGroup, build_group, score

PROMPT = Prompt("p1", "Start with 7. Add 5.", "12", "Step 1: 7 + 5 = 12\nAnswer: 12")


def completions(n: int) -> list[Completion]:
    return [
        Completion(
            f"Step 1: 7 + 5 = {10 + i}\nAnswer: {10 + i}", (1, 2, 3), (-0.1, -0.2, -0.3), policy_version=3
        )
        for i in range(n)
    ]


def judgement(first_error: int, rts: float) -> StepJudgement:
    """Two steps measured so that the share before `first_error` (-1: before the last step) is `rts`."""
    head = round(rts * 10)
    return StepJudgement("ok", ("a", "b"), first_error, (head, 10 - head), backend="test")


class RecordingJudge:
    """The judge boundary: returns scripted judgements and records which completions it was asked about."""

    def __init__(self, result: list[StepJudgement | None] | None) -> None:
        self.result, self.calls = result, []

    def __call__(self, indices: list[int]) -> list[StepJudgement | None]:
        self.calls.append(indices)
        return self.result[: len(indices)] if self.result is not None else [None] * len(indices)


def build(statuses: list[str], judge: RecordingJudge, cfg: AlgoConfig, **kw: bool) -> ScoredGroup:
    verdicts = [Verdict(s) for s in statuses]  # type: ignore[arg-type]
    return build_group(
        PROMPT,
        "prompt",
        [1, 2],
        completions(len(statuses)),
        verdicts,
        judge,
        get_algorithm(cfg),
        run_id="r",
        timings={},
        **kw,
    )


def test_all_negative_group_is_judged_and_colored_with_rts_rewards() -> None:
    judge = RecordingJudge([judgement(0, 0.0), judgement(1, 0.5), judgement(-1, 0.5), judgement(0, 0.0)])
    scored = build(["wrong"] * 4, judge, AlgoConfig())
    group = scored.group
    assert judge.calls == [[0, 1, 2, 3]] and scored.score.keep and not scored.score.uncolorable
    assert group.colored and group.kind == "all_negative"
    assert group.rewards[1] == pytest.approx(compute_colored_reward(0.5))
    assert group.advantages[1] > 0 > group.advantages[0]
    assert "judge" in group.timings and group.policy_version == 3


def test_mixed_group_is_not_judged_under_all_negative_scope() -> None:
    judge = RecordingJudge([])
    group = build(["correct", "wrong", "wrong"], judge, AlgoConfig()).group
    assert judge.calls == [] and not group.colored
    assert group.rewards == (1.0, 0.0, 0.0)


def test_grpo_never_calls_the_judge() -> None:
    judge = RecordingJudge([])
    group = build(["wrong"] * 3, judge, AlgoConfig(algo="grpo")).group
    assert judge.calls == [] and group.advantages == (0.0, 0.0, 0.0) and group.algo == "grpo"


def test_judge_failure_leaves_group_uncolored_and_flagged() -> None:
    scored = build(["wrong"] * 3, RecordingJudge(None), AlgoConfig())
    assert scored.score.uncolorable and scored.score.keep and not scored.group.colored
    assert scored.group.advantages == (0.0, 0.0, 0.0)


def test_failed_judgement_status_counts_as_failure() -> None:
    judge = RecordingJudge([judgement(0, 0.0), StepJudgement("failed", reason="unparseable")])
    scored = build(["wrong", "wrong"], judge, AlgoConfig())
    assert scored.score.uncolorable and not scored.group.colored


def test_dapo_drops_zero_and_full_accuracy_groups() -> None:
    cfg = AlgoConfig(algo="dapo")
    assert build(["wrong"] * 3, RecordingJudge([]), cfg).score.drop_reason == "filtered"
    assert build(["correct"] * 3, RecordingJudge([]), cfg).score.drop_reason == "filtered"
    assert build(["correct", "wrong", "wrong"], RecordingJudge([]), cfg).score.keep


def test_recording_judges_every_wrong_answer_and_replay_rescoring_switches_algorithm() -> None:
    judge = RecordingJudge([judgement(0, 0.0), judgement(1, 0.5)])
    group = build(["correct", "wrong", "wrong"], judge, AlgoConfig(algo="grpo"), judge_all_wrong=True).group
    assert judge.calls == [[1, 2]] and not group.colored
    colored = score(group, get_algorithm(AlgoConfig(color_scope="all_incorrect"))).group
    assert colored.colored and colored.rewards[2] == pytest.approx(compute_colored_reward(0.5))
    assert colored.algo == "sgpo"
    # The judgements keep their step lengths, so a replay may also measure rts in steps.
    in_steps = score(group, get_algorithm(AlgoConfig(color_scope="all_incorrect", rts_unit="steps"))).group
    assert in_steps.rewards[2] == pytest.approx(compute_colored_reward(0.5)) and in_steps.rewards[1] < 0.5


def test_the_judge_deadline_derives_from_the_per_response_budget_and_concurrency(tmp_path: Path) -> None:
    from sgpo.orchestrator.config import OrchestratorConfig

    cfg = OrchestratorConfig(dataset=tmp_path / "d.jsonl", judge_response_budget_s=100, judge_concurrency=4)
    assert [cfg.judge_deadline_s(n) for n in (1, 4, 5, 8, 16)] == [110, 110, 210, 210, 410]
    fixed = cfg.model_copy(update={"judge_timeout_s": 30.0})
    assert fixed.judge_deadline_s(16) == 30.0


def test_the_judge_alarm_fires_past_the_threshold_and_clears() -> None:
    from sgpo.orchestrator.alarm import JudgeHealth
    from sgpo.orchestrator.config import JudgeAlarmConfig

    h = JudgeHealth(JudgeAlarmConfig(window=10, min_judged=4, max_failed_share=0.5))
    assert not h.record(failed=3, ok=0).alarm  # under min_judged
    s = h.record(failed=1, ok=0)
    assert s.alarm and s.changed and s.failed_share == 1.0
    assert h.record(failed=0, ok=3).alarm  # 4 of 7 failed
    s = h.record(failed=0, ok=3)  # the window keeps the last 10: 4 failed
    assert not s.alarm and s.changed
    with pytest.raises(ValueError, match="could never fire"):
        JudgeAlarmConfig(window=4, min_judged=8)
