"""SGPO inside other trainers: reward adapters that call the judge's `POST /v1/score_groups` (docs/integrations.md).

- `sgpo.integrations.client`: `ScoringClient`, the HTTP client every adapter uses (httpx only).
- `sgpo.integrations.trl`: `ColoredReward`, a reward function for TRL's `GRPOTrainer`.
- `sgpo.integrations.verl`: `SgpoRewardManager`, a batch reward manager for verl, and `compute_score` for verl's
  `batch` manager.
- OpenRLHF needs no code: `--remote_rm_url http://JUDGE/v1/openrlhf/reward?api_key=KEY` (sgpo.judge.scoring).

None imports its framework at module import time: each reads only the plain values the framework passes.
"""
