"""The judge-noise ablation wrapper around the real symbolic backend."""

from __future__ import annotations

import pytest

from sgpo.core import InvalidInputError
from sgpo.judge.config import JudgeConfig, SymbolicBackend
from sgpo.judge.judge import build_judge
from sgpo.judge.noise import NoisyLocator
from sgpo.judge.symbolic import SymbolicLocator
from sgpo.judge.types import JudgeItem
from sgpo.tasks.arith import ArithSpec, generate_split

PROBLEMS = generate_split("noise", (4,), 60, seed=0, spec=ArithSpec(start_max=9))


def wrong_responses() -> list[tuple[str, str, list[str]]]:
    """Each problem's reference with its second step's result off by one (first error: step 1)."""
    out = []
    for p in PROBLEMS:
        lines = p.solution.splitlines()
        a, _, c = lines[1].rpartition(" = ")
        lines[1] = f"{a} = {int(c) + 1}"
        out.append((p.problem, p.solution, lines))
    return out


def test_no_noise_is_the_backend_itself() -> None:
    inner = SymbolicLocator(SymbolicBackend())
    noisy = NoisyLocator(SymbolicLocator(SymbolicBackend()), 0.0)
    for problem, ref, steps in wrong_responses():
        assert noisy.locate(problem, ref, [steps]) == inner.locate(problem, ref, [steps])
        assert inner.locate(problem, ref, [steps])[0].first_error_step == 1


def test_full_noise_draws_uniform_steps_reproducibly_whatever_the_batching() -> None:
    noisy = NoisyLocator(SymbolicLocator(SymbolicBackend()), 1.0, seed=3)
    responses = wrong_responses()
    one_by_one = [noisy.locate(pr, ref, [steps])[0].first_error_step for pr, ref, steps in responses]
    n_steps = len(responses[0][2])
    assert all(k is not None and 0 <= k < n_steps for k in one_by_one)
    assert set(one_by_one) == set(range(n_steps))  # 60 draws over 5 steps hit every one
    problem, ref, steps = responses[0]
    in_a_batch = noisy.locate(problem, ref, [responses[1][2], steps, steps])
    assert [loc.first_error_step for loc in in_a_batch[1:]] == [one_by_one[0]] * 2
    other_seed = NoisyLocator(SymbolicLocator(SymbolicBackend()), 1.0, seed=4)
    assert [other_seed.locate(pr, ref, [s])[0].first_error_step for pr, ref, s in responses] != one_by_one


def test_partial_noise_replaces_about_that_fraction() -> None:
    judge = build_judge(JudgeConfig(noise=0.5, noise_seed=1))
    replaced = 0
    for problem, ref, steps in wrong_responses():
        [j] = judge.judge(problem, ref, [JudgeItem(response="\n".join(steps))])
        replaced += "noise" in j.reason
    assert 15 <= replaced <= 45  # 60 fair coins: outside this band has probability < 1e-4
    assert judge.name.endswith("+noise0.5")


def test_noise_is_a_probability() -> None:
    with pytest.raises(InvalidInputError, match="noise"):
        NoisyLocator(SymbolicLocator(SymbolicBackend()), 1.5)
    with pytest.raises(ValueError, match="noise"):
        JudgeConfig(noise=-0.1)
