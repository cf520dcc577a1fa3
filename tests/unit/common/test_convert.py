"""Group <-> protobuf round trip, and judgements recorded before step lengths existed."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sgpo.common.convert import group_from_bytes, group_to_bytes, judgement_from_pb, judgement_to_pb
from sgpo.core import Completion, Group, StepJudgement, Verdict, compute_rts, judgement_rts
from sgpo.v1 import common_pb2, judge_pb2


def make_group(n_tokens: int = 5000) -> Group:
    rng = random.Random(0)
    text = "Schritt 1: 7 × 5 = 35 ✓ — 数学 \U0001f9ee\nΣ steps; naïve café"
    completions = tuple(
        Completion(
            text=f"{text} #{i}",
            token_ids=tuple(rng.randrange(0, 150_000) for _ in range(n_tokens)),
            logprobs=tuple(-rng.random() * 10 for _ in range(n_tokens)),
            finish_reason="length" if i % 2 else "stop",
            policy_version=7,
            token_char_starts=tuple(range(n_tokens)),
        )
        for i in range(3)
    )
    return Group(
        group_id="g-1",
        run_id="run-ü",
        prompt_id="p-42",
        problem="Wie viel ist 7 × 5? 🤔",
        prompt_text="Problem: Wie viel ist 7 × 5? 🤔\n",
        prompt_token_ids=tuple(range(30)),
        answer="35",
        reference_solution="7 × 5 = 35",
        completions=completions,
        verdicts=(
            Verdict("wrong", "34", "mismatch"),
            Verdict("unscorable", "", "timeout"),
            Verdict("wrong", "3", ""),
        ),
        judgements=(
            StepJudgement("ok", ("a", "b ✓"), 1, (12, 30), "", "symbolic"),
            None,
            StepJudgement("failed", reason="x"),
        ),
        rewards=(0.25, 0.0, 0.0),
        advantages=(0.7071, 0.0, -0.7071),
        kind="all_negative",
        colored=True,
        policy_version=7,
        algo="sgpo",
        timings={"generate": 1.5, "judge": 0.25},
        created_unix_ms=1_700_000_000_000,
    )


def test_group_round_trip_with_unicode_and_thousands_of_tokens() -> None:
    group = make_group()
    data = group_to_bytes(group)
    back = group_from_bytes(data)
    # logprobs travel as float32: compare those within float32 precision, everything else exactly.
    for a, b in zip(group.completions, back.completions, strict=True):
        assert a.token_ids == b.token_ids and a.text == b.text and a.token_char_starts == b.token_char_starts
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-5
    strip = lambda g: {k: v for k, v in g.__class__.__dict__["__dataclass_fields__"].items()}  # noqa: E731
    for name in strip(group):
        if name != "completions":
            assert getattr(back, name) == getattr(group, name), name
    assert len(back.completions[0].token_ids) == 5000


def test_the_judge_contract_carries_step_lengths_and_no_reward() -> None:
    """The judge locates, core scores: no reward (nor coloring parameters) crosses the gRPC boundary."""
    assert "reward" not in common_pb2.StepJudgement.DESCRIPTOR.fields_by_name
    assert "coloring" not in judge_pb2.JudgeRequest.DESCRIPTOR.fields_by_name
    j = StepJudgement("ok", ("a", "b", "c"), 2, (4, 0, 7), "r", "llm")
    m = judgement_to_pb(j)
    assert list(m.step_lengths) == [4, 0, 7] and m.legacy_rts == 0.0
    assert judgement_from_pb(m) == j
    assert judgement_from_pb(common_pb2.StepJudgement()) is None


@given(
    st.lists(st.integers(0, 50_000), min_size=1, max_size=40).filter(lambda x: sum(x) > 0),
    st.integers(-1, 39),
)
def test_a_recorded_rts_without_step_lengths_is_reproduced_exactly(
    lengths: list[int], first_error: int
) -> None:
    first_error = min(first_error, len(lengths) - 1)
    rts = compute_rts(lengths, first_error)
    steps = [f"s{i}" for i in range(len(lengths))]
    legacy = common_pb2.StepJudgement(
        status=common_pb2.JUDGE_STATUS_OK, steps=steps, first_error_step=first_error, legacy_rts=rts
    )
    back = judgement_from_pb(legacy)
    assert back is not None and len(back.step_lengths) == len(steps)
    assert judgement_rts(back, "tokens") == rts  # bit for bit: the replay scores it as it was recorded
    assert judgement_rts(back, "steps") == compute_rts([1] * len(steps), first_error)


@pytest.mark.parametrize("status", [common_pb2.JUDGE_STATUS_FAILED, 7])
def test_failed_and_unknown_judgement_statuses(status: int) -> None:
    m = common_pb2.StepJudgement(status=status, reason="x")  # type: ignore[arg-type]
    if status == common_pb2.JUDGE_STATUS_FAILED:
        back = judgement_from_pb(m)
        assert back is not None and back.status == "failed" and back.step_lengths == ()
    else:
        with pytest.raises(ValueError, match="not ok/failed"):
            judgement_from_pb(m)
