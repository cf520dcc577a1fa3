"""Contract tests of the verl and OpenRLHF adapters against the real endpoint (verifier and judge services started
here). Neither framework runs here (Ray, GPU workers): the inputs are built as their documented interfaces build
them, read from their sources (verl b178a3c, 2026-01-29; OpenRLHF 3c3be62, 2026-08-13), and the outputs are
consumed the way their code consumes them. What a GPU run would still have to show: docs/integrations.md."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import numpy as np
import pytest
import torch

from sgpo.core import AlgoConfig
from sgpo.integrations.verl import SgpoRewardManager, compute_score
from tests.integration.test_score_groups import (  # noqa: F401  (module fixtures: the real services)
    EARLY,
    KEY,
    LATE,
    PROBLEM,
    RIGHT,
    RIGHT_TERSE,
    SLIP,
    Judge,
    judge,
    verifier,
)

pytestmark = pytest.mark.integration
R_MAX = AlgoConfig().r_max


# ------------------------------------------------------------------------------------------------ verl


class DataProto:
    """The two fields of verl's DataProto a reward manager reads: `batch` (a TensorDict there; tensors by key)
    and `non_tensor_batch` (numpy object arrays by key)."""

    def __init__(self, batch: dict[str, torch.Tensor], non_tensor_batch: dict[str, np.ndarray]) -> None:
        self.batch, self.non_tensor_batch = batch, non_tensor_batch

    def __len__(self) -> int:
        return int(self.batch["responses"].shape[0])


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from sgpo.tasks.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("tiny"))


def verl_batch(tokenizer: Any, samples: list[tuple[str, str, str, str]], shuffle: bool = True) -> DataProto:
    """What verl's trainer hands the reward manager after rollout: samples (uid, problem, answer, response) with
    left-padded prompts, right-padded responses, attention_mask over both; rows in any order (verl balances
    batches by length, so a group's samples are not adjacent)."""
    if shuffle:
        samples = samples[:]
        random.Random(0).shuffle(samples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompts = [tokenizer.encode(f"{p}\n") for _, p, _, _ in samples]
    responses = [tokenizer.encode(r) for _, _, _, r in samples]
    pl, rl = max(map(len, prompts)), max(map(len, responses))
    prompt_ids = torch.tensor([[pad] * (pl - len(x)) + x for x in prompts])
    response_ids = torch.tensor([x + [pad] * (rl - len(x)) for x in responses])
    mask = torch.tensor(
        [
            [0] * (pl - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (rl - len(r))
            for p, r in zip(prompts, responses, strict=True)
        ]
    )
    obj = lambda xs: np.array(xs, dtype=object)  # noqa: E731
    return DataProto(
        {"prompts": prompt_ids, "responses": response_ids, "attention_mask": mask},
        {
            "uid": obj([u for u, _, _, _ in samples]),
            "data_source": obj(["arith"] * len(samples)),
            "reward_model": obj([{"style": "rule", "ground_truth": a} for _, _, a, _ in samples]),
            "extra_info": obj([{"question": p, "index": u} for u, p, _, _ in samples]),
        },
    )


def test_verl_manager_colors_all_negative_groups_by_uid(judge: Judge, tokenizer: Any) -> None:  # noqa: F811
    manager = SgpoRewardManager(tokenizer, num_examine=0, compute_score=None, url=judge.url, api_key=KEY)
    samples = [
        *(("neg", PROBLEM, "32", r) for r in (SLIP, EARLY, LATE)),
        *(("mix", PROBLEM, "32", r) for r in (RIGHT, SLIP, RIGHT_TERSE)),
    ]
    data = verl_batch(tokenizer, samples)
    out = manager(data, return_dict=True)
    rewards = out["reward_tensor"]
    assert rewards.shape == data.batch["responses"].shape and rewards.dtype == torch.float32
    lengths = data.batch["attention_mask"][:, data.batch["prompts"].shape[-1] :].sum(-1)
    by_response: dict[tuple[str, str], float] = {}
    for i in range(len(data)):
        last = int(lengths[i]) - 1
        assert torch.count_nonzero(rewards[i, :last]) == 0  # the reward sits on the last response token only
        text = tokenizer.decode(data.batch["responses"][i][: int(lengths[i])], skip_special_tokens=True)
        by_response[(data.non_tensor_batch["uid"][i], text)] = float(rewards[i, last])
    neg = [by_response[("neg", r)] for r in (SLIP, EARLY, LATE)]
    assert 0.0 < neg[1] < neg[0] < neg[2] < R_MAX
    assert [by_response[("mix", r)] for r in (RIGHT, SLIP, RIGHT_TERSE)] == [1.0, 0.0, 1.0]
    extra = out["reward_extra_info"]
    assert set(extra) == {"sgpo_correct", "sgpo_colored", "sgpo_all_negative", "sgpo_uncolorable", "sgpo_rts"}
    assert all(len(v) == len(data) for v in extra.values())
    assert sum(extra["sgpo_colored"]) == 3 and sum(extra["sgpo_correct"]) == 2
    assert manager.last_summary.startswith("[sgpo] 2 groups: 1 all-negative, 1 colored, 0 samples")
    assert torch.equal(manager(data), rewards)  # return_dict=False: the tensor alone


def test_verl_validation_with_one_sample_per_prompt_is_plain_accuracy(judge: Judge, tokenizer: Any) -> None:  # noqa: F811
    manager = SgpoRewardManager(tokenizer, num_examine=1, url=judge.url, api_key=KEY)
    data = verl_batch(tokenizer, [("a", PROBLEM, "32", RIGHT), ("b", PROBLEM, "32", SLIP)], shuffle=False)
    out = manager(data, return_dict=True)
    assert out["reward_tensor"].sum(-1).tolist() == [1.0, 0.0]
    assert out["reward_extra_info"]["sgpo_colored"] == [0.0, 0.0]


def test_verl_batch_compute_score_groups_by_extra_info_index(judge: Judge) -> None:  # noqa: F811
    """`reward_model.reward_manager=batch` with our compute_score: the arguments verl's BatchRewardManager passes."""
    responses = [SLIP, RIGHT, EARLY, SLIP]
    got = compute_score(
        data_sources=["arith"] * 4,
        solution_strs=responses,
        ground_truths=["32"] * 4,
        extra_infos=[
            {"index": 0, "question": PROBLEM},
            {"index": 1, "question": PROBLEM},
            {"index": 0, "question": PROBLEM},
            {"index": 1, "question": PROBLEM},
        ],
        url=judge.url,
        api_key=KEY,
    )
    assert [set(g) >= {"score", "sgpo_colored"} for g in got] == [True] * 4
    assert 0.0 < got[2]["score"] < got[0]["score"] < R_MAX  # group 0 (SLIP, EARLY): all-negative, colored
    assert [got[1]["score"], got[3]["score"]] == [1.0, 0.0]  # group 1 (RIGHT, SLIP): mixed


def test_verl_adapters_say_what_is_missing(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"reward_kwargs\.url"):
        SgpoRewardManager(tokenizer, 0)
    with pytest.raises(ValueError, match="one entry per sample"):
        compute_score(["a"], ["x", "y"], ["1", "1"], [{}, {}], url="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="cannot tell the groups apart"):
        compute_score(["a", "a"], ["x", "y"], ["1", "1"], [{}, {}], url="http://127.0.0.1:1")


# ------------------------------------------------------------------------------------------------ OpenRLHF


def test_openrlhf_consumes_the_response_as_its_executor_does(judge: Judge) -> None:  # noqa: F811
    """OpenRLHF 3c3be62: `SingleTurnAgentExecutor.execute` posts {"query": [prompt + response], "prompts":
    [prompt], "labels": [label]} per sample (the n samples of a prompt concurrently, `generate_responses`), reads
    `rewards`, `scores` (else rewards) and `extra_logs`; `_process_response_into_experience` turns them into
    tensors; `compute_advantages_and_returns` reshapes rewards to (-1, n_samples_per_prompt)."""
    n = 3
    url = f"{judge.url}/v1/openrlhf/reward?api_key={KEY}&n_samples_per_prompt={n}"
    prompt = f"<|user|>{PROBLEM}\n<|assistant|>"  # a chat-templated prompt: the query starts with it

    async def execute(response: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=180) as session:
            r = await session.post(
                url, json={"query": [prompt + response], "prompts": [prompt], "labels": ["32"]}
            )
            r.raise_for_status()
            rewards_info = r.json()
        score_value = rewards_info.get("scores")
        if score_value is None:
            score_value = rewards_info.get("rewards")
        info = {"reward": torch.tensor([rewards_info.get("rewards")]), "score": torch.tensor([score_value])}
        for key, value in (rewards_info.get("extra_logs") or {}).items():
            info[key] = torch.tensor([value])
        return info

    async def generate_responses() -> list[dict[str, Any]]:
        return await asyncio.gather(*(execute(r) for r in (SLIP, EARLY, LATE)))

    infos = asyncio.run(generate_responses())
    rewards = torch.cat([i["reward"] for i in infos], dim=0).reshape(-1, n)
    assert rewards.shape == (1, n)
    # the all-negative group has a learning signal: not the zero std a group of 0/1 rewards would have
    assert float(rewards.std()) > 0.0
    assert all(0.0 < float(r) < R_MAX for r in rewards.flatten())
    assert [float(i["score"]) for i in infos] == [0.0, 0.0, 0.0]  # dynamic filtering sees accuracy
    assert [float(i["sgpo_colored"]) for i in infos] == [1.0, 1.0, 1.0]
    assert [float(i["sgpo_rts"]) == 0.0 for i in infos] == [False, True, False]  # EARLY errs at step 0
