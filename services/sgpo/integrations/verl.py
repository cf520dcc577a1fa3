"""SGPO's rewards in verl (docs/integrations.md#verl): a batch reward manager, and a `compute_score` for verl's own
`batch` manager.

verl scores one sample at a time in `compute_score` by default; coloring needs the whole group, so this plugs in
at the batch level. Read from verl at commit b178a3c (2026-01-29): `verl/trainer/ppo/reward.py`
(`load_reward_manager`: `reward_manager.source=importlib` loads `reward_manager.name` from the file
`reward_manager.module.path`, built with `tokenizer`, `num_examine`, `compute_score`, `reward_fn_key` and
`reward_model.reward_kwargs`), `verl/workers/reward_manager/batch.py` (the `batch` manager calls
`compute_score(data_sources=, solution_strs=, ground_truths=, extra_infos=, **reward_kwargs)` once per batch and
takes a list of floats or of dicts with "score") and `abstract.py` (`__call__(data, return_dict)` returns the
token-level reward tensor, the reward at each response's last token, or {"reward_tensor", "reward_extra_info"}).

1. `SgpoRewardManager` (recommended): groups by verl's `uid` (one per prompt, repeated over its
   `actor_rollout_ref.rollout.n` samples), so groups are exact whatever the batch order (verl balances batches).
2. `compute_score`, for `reward_model.reward_manager=batch`: verl passes no uid there, so a group is the samples
   with the same `extra_info["index"]` (verl's data recipes write it) or else the same problem and answer.

The module imports neither verl nor torch at import time (verl loads it by path; torch only inside `__call__`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from sgpo.integrations.client import ScoringClient

log = logging.getLogger(__name__)

URL_ENV, KEY_ENV = "SGPO_SCORING_URL", "SGPO_SCORING_API_KEY"


def _client(url: str | None, api_key: str | None, **kw: Any) -> ScoringClient:
    url = url or os.environ.get(URL_ENV)
    if not url:
        raise ValueError(
            f"SGPO's verl reward needs the judge's URL: set +reward_model.reward_kwargs.url=http://judge:8081 "
            f"(or the {URL_ENV} environment variable of the trainer)"
        )
    return ScoringClient(url, api_key=api_key or os.environ.get(KEY_ENV), **kw)


def problem_of(extra_info: Any, prompt: str) -> str:
    """The problem shown to the judge: extra_info's question/problem (verl's data recipes write `question`), else
    the decoded prompt."""
    if isinstance(extra_info, dict):
        for key in ("problem", "question"):
            if extra_info.get(key):
                return str(extra_info[key])
    return prompt


def score_grouped(
    client: ScoringClient,
    keys: Sequence[Any],
    problems: Sequence[str],
    answers: Sequence[str],
    references: Sequence[str],
    responses: Sequence[str],
) -> list[dict[str, Any]]:
    """Score samples grouped by `keys` (order of first appearance); one completion result per sample, in order,
    with its group's `kind`, `colored` and `judge_error` added."""
    members: dict[Any, list[int]] = {}
    for i, k in enumerate(keys):
        members.setdefault(k, []).append(i)
    groups = list(members.values())
    request = [
        {
            "problem": problems[idx[0]],
            "answer": answers[idx[0]],
            "reference_solution": references[idx[0]],
            "completions": [responses[i] for i in idx],
        }
        for idx in groups
    ]
    out: list[dict[str, Any]] = [{}] * len(keys)
    for idx, g in zip(groups, client.score_groups(request), strict=True):
        for i, c in zip(idx, g["completions"], strict=True):
            out[i] = {
                **c,
                "group_kind": g["kind"],
                "group_colored": g["colored"],
                "judge_error": g["judge_error"],
            }
    failed = [g for g in out if g["judge_error"]]
    if failed:
        log.warning(
            "%d samples in uncolored groups (judge failures); first: %s",
            len(failed),
            failed[0]["judge_error"],
        )
    return out


def _extra(c: dict[str, Any]) -> dict[str, float]:
    """Per-sample numbers verl keeps in reward_extra_info (dumped with the generations, averaged in validation)."""
    return {
        "sgpo_correct": float(c["verdict"] == "correct"),
        "sgpo_colored": float(c["colored"]),
        "sgpo_all_negative": float(c["group_kind"] == "all_negative"),
        "sgpo_uncolorable": float(bool(c["judge_error"])),
        "sgpo_rts": -1.0 if c["rts"] is None else float(c["rts"]),
    }


def compute_score(
    data_sources: Sequence[str],
    solution_strs: Sequence[str],
    ground_truths: Sequence[Any],
    extra_infos: Sequence[Any] | None = None,
    *,
    url: str | None = None,
    api_key: str | None = None,
    **_: Any,
) -> list[dict[str, float]]:
    """verl's `batch` manager interface: one dict per sample with "score" (the reward) and the sgpo_* extras."""
    n = len(solution_strs)
    infos = list(extra_infos) if extra_infos is not None else [{}] * n
    if not (len(data_sources) == len(ground_truths) == len(infos) == n):
        raise ValueError(
            f"data_sources, solution_strs, ground_truths and extra_infos need one entry per sample; got "
            f"{len(data_sources)}, {n}, {len(ground_truths)}, {len(infos)}"
        )
    answers = [str(g) for g in ground_truths]
    problems = [problem_of(e, "") for e in infos]
    keys = [
        ("index", e["index"]) if isinstance(e, dict) and "index" in e else ("problem", p, a)
        for e, p, a in zip(infos, problems, answers, strict=True)
    ]
    if any(k[0] == "problem" and not k[1] for k in keys):
        raise ValueError(
            "compute_score cannot tell the groups apart: give each sample an extra_info with 'index' (or 'question'), "
            "or use SgpoRewardManager, which groups by verl's uid"
        )
    refs = [str(e.get("reference_solution", "")) if isinstance(e, dict) else "" for e in infos]
    scored = score_grouped(_client(url, api_key), keys, problems, answers, refs, solution_strs)
    return [{"score": float(c["reward"]), **_extra(c)} for c in scored]


class SgpoRewardManager:
    """A verl reward manager (`reward_manager.source=importlib`, `reward_manager.name=SgpoRewardManager`).

    Groups by `uid`; reward at each response's last valid token, as verl's own managers place it. Takes
    `url` and `api_key` from `reward_model.reward_kwargs` (or SGPO_SCORING_URL / SGPO_SCORING_API_KEY).
    """

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        *,
        url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        max_completions_per_request: int = 256,
        **_: Any,
    ) -> None:
        del compute_score  # the judge scores; verl passes its default here
        self.tokenizer = tokenizer
        self.num_examine = num_examine
        self.reward_fn_key = reward_fn_key
        self.client = _client(
            url, api_key, timeout_s=timeout_s, max_completions_per_request=max_completions_per_request
        )
        self.last_summary = ""

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        import torch

        if "rm_scores" in data.batch.keys():  # noqa: SIM118  (a TensorDict: verl tests keys() so)
            scores = data.batch["rm_scores"]
            return {"reward_tensor": scores, "reward_extra_info": {}} if return_dict else scores
        prompt_ids, response_ids = data.batch["prompts"], data.batch["responses"]
        prompt_len = prompt_ids.shape[-1]
        lengths = data.batch["attention_mask"][:, prompt_len:].sum(dim=-1).tolist()
        n = len(lengths)
        nt = data.non_tensor_batch
        if "uid" not in nt:
            raise ValueError(
                "SgpoRewardManager groups by verl's 'uid'; this batch has none (non_tensor_batch keys: "
                f"{sorted(nt)})"
            )
        responses = [
            self.tokenizer.decode(response_ids[i][: lengths[i]], skip_special_tokens=True) for i in range(n)
        ]
        prompts = [self.tokenizer.decode(prompt_ids[i], skip_special_tokens=True) for i in range(n)]
        infos = list(nt.get("extra_info", [{}] * n))
        answers = [str(rm.get("ground_truth", "")) for rm in nt["reward_model"]]
        problems = [problem_of(e, p) for e, p in zip(infos, prompts, strict=True)]
        refs = [str(e.get("reference_solution", "")) if isinstance(e, dict) else "" for e in infos]
        scored = score_grouped(self.client, list(nt["uid"]), problems, answers, refs, responses)

        reward_tensor = torch.zeros_like(response_ids, dtype=torch.float32)
        extra: dict[str, list[float]] = {}
        for i, c in enumerate(scored):
            if lengths[i] > 0:
                reward_tensor[i, lengths[i] - 1] = float(c["reward"])
            for k, v in _extra(c).items():
                extra.setdefault(k, []).append(v)
        groups = {k: (s["group_kind"], s["group_colored"]) for k, s in zip(nt["uid"], scored, strict=True)}
        self.last_summary = (
            f"[sgpo] {len(groups)} groups: {sum(k == 'all_negative' for k, _ in groups.values())} all-negative, "
            f"{sum(c for _, c in groups.values())} colored, "
            f"{sum(bool(s['judge_error']) for s in scored)} samples left uncolored by judge failures"
        )
        print(self.last_summary, flush=True)  # verl's managers print to the driver's log; so does this one
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": extra}
        return reward_tensor
