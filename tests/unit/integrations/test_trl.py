"""ColoredReward's pure parts: rebuilding TRL's groups from repeated prompts, reading TRL's completion formats, the
numbers it logs. The call against the real endpoint: tests/integration/test_trl_colored_reward.py."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sgpo.integrations.trl import BatchStats, ColoredReward, groups_of, text_of


def test_groups_are_trls_blocks_of_num_generations() -> None:
    keys = ["a"] * 4 + ["b"] * 4 + ["a"] * 4  # the same prompt drawn again later is a new group
    assert groups_of(keys, 4) == [range(0, 4), range(4, 8), range(8, 12)]
    assert groups_of(["a"] * 8, 4) == [range(0, 4), range(4, 8)]  # drawn twice in a row: two groups
    assert groups_of(["a", "a", "b", "b", "b"], None) == [range(0, 2), range(2, 5)]  # runs, without the size
    assert groups_of(["a", "b"], None) == [range(0, 1), range(1, 2)]  # one generation each (evaluation)


def test_a_group_split_across_processes_is_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"per_device_train_batch_size \* steps_per_generation"):
        groups_of(["a"] * 2 + ["b"] * 4, 4)  # this process holds 2 of a's 4 samples
    with pytest.raises(ValueError, match=r"groups of \[1\]"):
        groups_of(["a", "b", "b"], None)


def test_text_of_reads_standard_and_conversational_formats() -> None:
    assert text_of("Answer: 3") == "Answer: 3"
    assert text_of([{"role": "assistant", "content": "Answer: 3"}]) == "Answer: 3"
    assert text_of([{"role": "system", "content": "be brief"}, {"role": "user", "content": "1+2?"}]) == "1+2?"
    assert (
        text_of(
            [{"role": "user", "content": [{"type": "text", "text": "1+"}, {"type": "text", "text": "2?"}]}]
        )
        == "1+2?"
    )
    with pytest.raises(TypeError, match="list of chat messages"):
        text_of(3)


def test_stats_separate_rewards_before_and_after_coloring() -> None:
    s = BatchStats(
        groups=2,
        all_negative=1,
        colored=1,
        uncolorable=0,
        verifier_rewards=[0.0, 0.0, 1.0, None],
        rewards=[0.1, 0.3, 1.0, None],
    )
    m = s.metrics()
    assert m["sgpo/colored_frac"] == 0.5 and m["sgpo/colored_of_all_negative"] == 1.0
    assert m["sgpo/colored_reward_mean"] == pytest.approx(0.2)
    assert m["sgpo/reward_before_coloring"] == pytest.approx(1 / 3)
    assert m["sgpo/reward_after_coloring"] == pytest.approx(1.4 / 3)


def test_bad_arguments_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="at least 2 generations"):
        ColoredReward("http://127.0.0.1:1", num_generations=1)
    with pytest.raises(ValueError, match="HTTP root"):
        ColoredReward("127.0.0.1:8081")
    reward = ColoredReward("http://127.0.0.1:1", num_generations=2)
    with pytest.raises(ValueError, match=r"column 'answer'.*\['solution'\]"):
        reward(prompts=["p", "p"], completions=["a", "b"], solution=["1", "1"], trainer_state=None)
    assert reward.__name__ == "colored_reward"  # TRL logs rewards/colored_reward/mean


def test_the_adapters_import_neither_their_frameworks_nor_torch() -> None:
    code = (
        "import sys, sgpo.integrations.trl, sgpo.integrations.verl, sgpo.integrations.client; "
        "print(','.join(m for m in ('trl', 'verl', 'openrlhf', 'torch', 'transformers', 'grpc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
