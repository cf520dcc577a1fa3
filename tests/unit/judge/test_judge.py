"""The judge's logic layer: splitting, step lengths in tokens / characters (rts and the colored reward follow in
sgpo.core), request validation with field names, limits, metrics. Runs the real symbolic backend."""

from __future__ import annotations

import math

import pytest

from sgpo.common.server import ResourceExhaustedError
from sgpo.core import (
    AlgoConfig,
    ColoringParams,
    InvalidInputError,
    compute_colored_reward,
    compute_rts,
    judgement_rts,
    split_steps,
)
from sgpo.judge.config import JudgeConfig
from sgpo.judge.judge import CHARS_NOTE, build_judge
from sgpo.judge.metrics import JudgeMetrics
from sgpo.judge.types import JudgeItem

PROBLEM = "Start with 7. Add 5. Multiply by 3. Subtract 4."
REFERENCE = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nStep 3: 36 - 4 = 32\nAnswer: 32"
SLIP = "Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 35\nStep 3: 35 - 4 = 31\nAnswer: 31"


def char_offsets(text: str) -> tuple[int, ...]:
    return tuple(range(len(text)))  # a character-level tokenizer: one token per character


@pytest.fixture
def judge():  # type: ignore[no-untyped-def]
    j = build_judge(JudgeConfig(), JudgeMetrics())
    yield j
    j.close()


def test_group_of_responses_measured_for_core_to_score(judge) -> None:  # type: ignore[no-untyped-def]
    items = [JudgeItem(response=SLIP, token_char_starts=char_offsets(SLIP)), JudgeItem(response=REFERENCE)]
    slip, ok = judge.judge(PROBLEM, REFERENCE, items)
    steps = split_steps(SLIP)
    assert slip.status == "ok" and slip.first_error_step == 1 and slip.backend == "symbolic"
    assert slip.steps == tuple(s.text for s in steps)
    assert slip.step_lengths == tuple(s.end - s.start for s in steps)  # 1 token per character here
    expected_rts = compute_rts([s.end - s.start for s in steps], 1)
    assert judgement_rts(slip, "tokens") == pytest.approx(expected_rts)
    assert CHARS_NOTE not in slip.reason
    # No located error: rts is the prefix up to, not including, the last step (docs/design.md §1).
    assert ok.first_error_step == -1
    ref_steps = split_steps(REFERENCE)
    rts = judgement_rts(ok, "tokens")
    assert rts == pytest.approx(sum(s.end - s.start for s in ref_steps[:-1]) / len(REFERENCE))
    assert CHARS_NOTE in ok.reason  # no offsets: measured in characters, and it says so


def test_rts_in_tokens_counts_tokens_per_step(judge) -> None:  # type: ignore[no-untyped-def]
    # Two tokens for the first step, six for the rest: rts at step 1 is 2 / 8 whatever the characters say.
    starts = (0, 10, 19, 25, 30, 40, 45, 50)
    (j,) = judge.judge(PROBLEM, REFERENCE, [JudgeItem(response=SLIP, token_char_starts=starts)])
    steps = split_steps(SLIP)
    assert steps[1].start <= 19 < steps[1].end
    assert sum(j.step_lengths) == 8 and j.step_lengths[0] == 2
    assert judgement_rts(j, "tokens") == pytest.approx(2 / 8)


def test_rts_in_steps_and_other_coloring_from_the_same_judgement(judge) -> None:  # type: ignore[no-untyped-def]
    coloring = ColoringParams(beta=10.0, gamma=0.3, r_max=0.4, rts_unit="steps")
    (j,) = judge.judge(PROBLEM, REFERENCE, [JudgeItem(response=SLIP)])
    rts = judgement_rts(j, coloring.rts_unit)
    assert rts == pytest.approx(1 / 4)
    assert compute_colored_reward(rts, coloring) == pytest.approx(0.4 / (1 + math.exp(-10.0 * (0.25 - 0.3))))
    assert CHARS_NOTE in j.reason  # the lengths it measured are characters; in steps they go unused


def test_pre_split_steps(judge) -> None:  # type: ignore[no-untyped-def]
    steps = ("First 2 + 2 = 4.", "Then 4 * 4 = 15.", "So the answer is 15.")
    (j,) = judge.judge("q", "", [JudgeItem(steps=steps)])
    assert j.steps == steps and j.first_error_step == 1 and j.step_lengths == tuple(map(len, steps))
    assert judgement_rts(j, "tokens") == pytest.approx(len(steps[0]) / sum(map(len, steps)))


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (JudgeItem(response="a", steps=("a",)), "items[0]"),
        (JudgeItem(steps=("ok", " ")), "items[0].steps[1]"),
        (JudgeItem(steps=("a",), token_char_starts=(0,)), "items[0].token_char_starts"),
        (JudgeItem(response="abc", token_char_starts=(0, 5)), "items[0].token_char_starts[1]"),
        (JudgeItem(response="abc", token_char_starts=(2, 1)), "items[0].token_char_starts[1]"),
        (JudgeItem(response="abc", token_char_starts=(-1,)), "items[0].token_char_starts[0]"),
    ],
)
def test_bad_items_name_the_field(judge, item: JudgeItem, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError) as e:
        judge.judge("q", "", [item])
    assert e.value.field == field


@pytest.mark.parametrize("unit", ["tokens", "steps"])
def test_default_coloring_and_rts_histogram_follow_the_algo_section(unit: str) -> None:
    """The judge's [algo] section is the default coloring of HTTP / CLI callers and the unit of its rts metric."""
    metrics = JudgeMetrics()
    algo = AlgoConfig(beta=3.0, gamma=0.25, r_max=0.4, rts_unit=unit)  # type: ignore[arg-type]
    j = build_judge(JudgeConfig(algo=algo), metrics)
    assert j.coloring == ColoringParams(3.0, 0.25, 0.4, unit)  # type: ignore[arg-type]
    (slip,) = j.judge(PROBLEM, REFERENCE, [JudgeItem(response=SLIP)])
    assert metrics.registry.get_sample_value("sgpo_judge_rts_ratio_sum") == pytest.approx(
        judgement_rts(slip, unit)
    )  # type: ignore[arg-type]


def test_limits_are_resource_exhausted() -> None:
    j = build_judge(JudgeConfig(max_items=2, max_steps=3))
    with pytest.raises(ResourceExhaustedError, match=r"items: 3 responses .* at most 2"):
        j.judge("q", "", [JudgeItem(response="x")] * 3)
    with pytest.raises(ResourceExhaustedError, match=r"items\[0\]: 4 steps; at most 3"):
        j.judge("q", "", [JudgeItem(steps=("a", "b", "c", "d"))])
    assert j.judge("q", "", []) == []


def test_metrics_count_outcomes_and_first_errors(judge) -> None:  # type: ignore[no-untyped-def]
    judge.judge(PROBLEM, REFERENCE, [JudgeItem(response=SLIP), JudgeItem(response=REFERENCE)])
    reg = judge.metrics.registry
    assert (
        reg.get_sample_value("sgpo_judge_judgements_total", {"backend": "symbolic", "outcome": "error_found"})
        == 1
    )
    assert (
        reg.get_sample_value("sgpo_judge_judgements_total", {"backend": "symbolic", "outcome": "no_error"})
        == 1
    )
    assert reg.get_sample_value("sgpo_judge_first_error_step_count") == 1
    assert reg.get_sample_value("sgpo_judge_first_error_step_sum") == 1


def test_two_judges_have_separate_registries() -> None:
    a, b = JudgeMetrics(), JudgeMetrics()
    build_judge(JudgeConfig(), a).judge("q", "", [JudgeItem(steps=("1 + 1 = 3",))])
    assert (
        a.registry.get_sample_value(
            "sgpo_judge_judgements_total", {"backend": "symbolic", "outcome": "error_found"}
        )
        == 1
    )
    assert (
        b.registry.get_sample_value(
            "sgpo_judge_judgements_total", {"backend": "symbolic", "outcome": "error_found"}
        )
        is None
    )


def test_judge_package_imports_without_torch_or_httpx() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import sgpo.judge.judge, sgpo.judge.symbolic, sgpo.judge.config;"
        "from sgpo.judge.judge import build_judge; from sgpo.judge.config import JudgeConfig;"
        "build_judge(JudgeConfig());"
        "print(sorted(m for m in ('torch', 'transformers', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
