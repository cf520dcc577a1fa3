"""Step splitting and per-step token counts."""

from __future__ import annotations

import itertools

import pytest

from sgpo.core import compute_step_token_counts, split_steps


def texts(s: str, mode: str = "auto") -> list[str]:
    return [step.text for step in split_steps(s, mode)]  # type: ignore[arg-type]


def test_step_headers_with_answer_line() -> None:
    assert texts("Step 1: 7 + 5 = 12\nStep 2: 12 * 3 = 36\nAnswer: 36") == [
        "Step 1: 7 + 5 = 12",
        "Step 2: 12 * 3 = 36",
        "Answer: 36",
    ]


def test_multiline_step_stays_whole_under_headers() -> None:
    assert texts("Step 1: add\n3 + 4 = 7\n\nStep 2: double\n7 * 2 = 14") == [
        "Step 1: add\n3 + 4 = 7",
        "Step 2: double\n7 * 2 = 14",
    ]


def test_blank_line_paragraphs() -> None:
    assert texts("First, 3 + 4 = 7.\nStill first.\n\n\nThen 7 * 2 = 14.") == [
        "First, 3 + 4 = 7.\nStill first.",
        "Then 7 * 2 = 14.",
    ]


def test_numbered_lines() -> None:
    assert texts("1. add 3 and 4\n   to get 7\n2) double it: 14") == [
        "1. add 3 and 4\n   to get 7",
        "2) double it: 14",
    ]


def test_sentence_fallback() -> None:
    assert texts("We compute 3+4=7. Then 7*2=14. So $14$ is it.") == [
        "We compute 3+4=7.",
        "Then 7*2=14.",
        "So $14$ is it.",
    ]


def test_single_step_and_explicit_mode() -> None:
    assert texts("just one") == ["just one"]
    assert texts("a. b\nc", mode="line") == ["a. b", "c"]


def test_spans_tile_the_text() -> None:
    text = "  Step 1: a\n\nStep 2: b  \n"
    steps = split_steps(text)
    assert steps[0].start == 0 and steps[-1].end == len(text)
    assert all(a.end == b.start for a, b in itertools.pairwise(steps))
    assert all(s.text in text[s.start : s.end] for s in steps)


def test_token_counts_follow_spans() -> None:
    text = "Step 1: 1 + 1 = 2\nStep 2: 2 + 2 = 4"
    steps = split_steps(text)
    starts = list(range(len(text)))  # character tokens
    counts = compute_step_token_counts(steps, starts)
    assert counts == [steps[0].end - steps[0].start, steps[1].end - steps[1].start]
    assert sum(counts) == len(text)


@pytest.mark.parametrize("mode", ["step_header", "blank_line", "numbered", "line", "sentence"])
def test_every_mode_keeps_all_content(mode: str) -> None:
    text = "Step 1: 1. a b.\n\nStep 2: c. D e"
    joined = "".join(texts(text, mode)).replace(" ", "").replace("\n", "")
    assert joined == text.replace(" ", "").replace("\n", "")


# ---- segment_steps: long chains of thought ------------------------------------------------------------------
COT = (
    "We start.\n\nSo we get\n\n$$x = 1$$\n\nwhich is fine. Next we compute a lot of things here.\n\nok\n\n"
    "\\[\na\n\n=b\n\\]\n\nDone and the answer is 3."
)


def test_display_math_stays_with_its_sentence_and_blocks_are_never_cut() -> None:
    from sgpo.core import segment_steps

    got = [s.text for s in segment_steps(COT)]
    assert got == [
        "We start.",
        "So we get\n\n$$x = 1$$",
        "which is fine. Next we compute a lot of things here.",
        "ok\n\n\\[\na\n\n=b\n\\]",
        "Done and the answer is 3.",
    ]


@pytest.mark.parametrize(
    ("min_chars", "cap"), [(0, 0), (30, 0), (0, 2), (0, 3), (30, 2), (10_000, 0), (0, 1)]
)
def test_merged_steps_tile_the_response_and_respect_the_limits(min_chars: int, cap: int) -> None:
    from sgpo.core import segment_steps

    steps = segment_steps(COT, min_chars=min_chars, max_steps=cap)
    assert steps[0].start == 0 and steps[-1].end == len(COT)
    assert all(a.end == b.start for a, b in itertools.pairwise(steps))
    assert all(s.text == COT[s.start : s.end].strip() for s in steps)
    if cap:
        assert len(steps) == min(cap, len(segment_steps(COT, min_chars=min_chars)))
    if min_chars and len(steps) > 1:
        assert all(len(s.text) >= min_chars for s in steps[:-1])


def test_the_cap_merges_evenly() -> None:
    from sgpo.core import segment_steps

    text = "\n\n".join(f"Paragraph {i:02d} says something of the same length." for i in range(40))
    steps = segment_steps(text, max_steps=8)
    assert len(steps) == 8 and {s.text.count("Paragraph") for s in steps} == {5}


def test_segmentation_on_real_olympiad_solutions() -> None:
    """OlympiadBench reference solutions (../shared/data): display math never starts a step, the cap holds."""
    import json
    import re

    from sgpo.core import segment_steps
    from tests.support import SHARED_DATA

    path = SHARED_DATA / "competition" / "olympiadbench_test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    rows = [json.loads(line) for line in path.read_text().splitlines()[:200]]
    for r in rows:
        text = "\n\n".join(r["solution"])
        steps = segment_steps(text, min_chars=80, max_steps=12)
        assert 1 <= len(steps) <= 12
        assert not any(re.match(r"^(\$\$|\\\[)", s.text) for s in steps[1:]), r["id"]
