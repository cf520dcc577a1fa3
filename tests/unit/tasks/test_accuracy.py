"""The one held-out evaluator (sgpo.tasks.accuracy): the tally, the chunking, and pretraining's use of it on a
real engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sgpo.tasks.accuracy import LevelItem, accuracy_by_level, level_order, sample_and_score


@dataclass(frozen=True)
class Completion:
    text: str
    token_ids: tuple[int, ...]
    policy_version: int


@dataclass(frozen=True)
class Result:
    completions: tuple[Completion, ...]


def test_accuracy_is_the_mean_over_every_completion_of_a_level() -> None:
    items = [LevelItem("a", "1", "10"), LevelItem("b", "2", "2"), LevelItem("c", "3", "2")]
    answers = {"a": ["1", "0"], "b": ["2", "2"], "c": ["0", "0"]}  # what the "policy" answers, 2 samples each
    seen_chunks: list[list[int]] = []

    def sample(chunk: list[int]) -> list[Result]:
        seen_chunks.append(chunk)
        return [
            Result(tuple(Completion(t, (1,) * (i + 1), 7 + i) for t in answers[items[i].problem]))
            for i in chunk
        ]

    result = accuracy_by_level(items, sample, lambda pairs: [c.text == it.answer for it, c in pairs], batch=2)
    assert seen_chunks == [[0, 1], [2]]
    assert list(result["accuracy"]) == ["2", "10"]  # natural order of levels
    assert result["accuracy"] == {"2": 0.5, "10": 0.5}
    assert result["overall"] == pytest.approx(3 / 6) and result["n"] == 6
    assert result["mean_tokens"] == pytest.approx((2 * 1 + 2 * 2 + 2 * 3) / 6)
    assert result["policy_versions"] == [7, 8, 9]


def test_sampling_that_returns_the_wrong_count_is_an_error() -> None:
    items = [LevelItem("a", "1", "1"), LevelItem("b", "1", "1")]
    with pytest.raises(ValueError, match="returned 1 outputs for 2 problems"):
        accuracy_by_level(items, lambda chunk: [Result(())], lambda pairs: [])


def test_sample_and_score_keeps_indices_and_overlaps_nothing_it_should_not() -> None:
    scored = sample_and_score(
        [[0, 2], [1]],
        lambda chunk: [f"out{i}" for i in chunk],
        lambda chunk, outs: [[o.upper()] for o in outs],
    )
    assert scored.outputs == {0: "out0", 2: "out2", 1: "out1"}
    assert scored.verdicts == {0: ["OUT0"], 2: ["OUT2"], 1: ["OUT1"]}


def test_level_order_is_numeric_for_numbers() -> None:
    assert sorted(["10", "2", "1", "all"], key=level_order) == ["1", "2", "10", "all"]


def test_pretraining_accuracy_uses_the_evaluator_on_a_real_engine(tmp_path: Path) -> None:
    """tasks.pretrain.accuracy_by_level == the exact-answer rate computed by hand from the same engine calls."""
    from sgpo.generator.hf import HFEngine
    from sgpo.generator.sampling import SamplingParams
    from sgpo.tasks.arith import ArithSpec, format_prompt, generate_split
    from sgpo.tasks.pretrain import accuracy_by_level as pretrain_accuracy
    from sgpo.tasks.pretrain import extract_answer
    from sgpo.tasks.tiny import build_tiny_policy

    policy = build_tiny_policy(tmp_path / "tiny", seed=0)
    problems = generate_split("test", (1, 2), 3, seed=0, spec=ArithSpec(start_max=9))
    engine = HFEngine(str(policy), device="cpu", dtype="float32")
    try:
        got = pretrain_accuracy(engine, problems, temperature=1.0, samples=2)
        expected = {}
        for level in (1, 2):
            ps = [p for p in problems if p.steps == level]
            params = SamplingParams(
                n=2, temperature=1.0, max_tokens=max(len(p.solution) for p in ps) + 24, seed=0
            )
            results = engine.generate([format_prompt(p.problem) for p in ps], params)
            hits = sum(
                extract_answer(c.text) == p.answer
                for r, p in zip(results, ps, strict=True)
                for c in r.completions
            )
            expected[level] = hits / (2 * len(ps))
    finally:
        engine.close()
    assert got == expected
