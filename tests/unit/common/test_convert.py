"""Group <-> protobuf round trip."""

from __future__ import annotations

import random

from sgpo.common.convert import group_from_bytes, group_to_bytes
from sgpo.core import Completion, Group, StepJudgement, Verdict


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
            StepJudgement("ok", ("a", "b ✓"), 1, 0.5, 0.25, "", "symbolic"),
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
