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
