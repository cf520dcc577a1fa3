"""The LLM judge's usage over a run, read from the judge's Prometheus endpoint (for summary.json).

Token counts are the endpoint's own `usage` (what it bills), cost is at the configured price per million
tokens (`price_prompt_per_mtok`, `price_completion_per_mtok` in [judge.backend]), 0 when none is set.
"""

from __future__ import annotations

import urllib.request
from typing import Any


def read_judge_usage(metrics_port: int, host: str = "127.0.0.1", timeout_s: float = 5.0) -> dict[str, Any]:
    """{prompt_tokens, completion_tokens, cost, config_errors, calls: {outcome: n}}; {} when the judge asked
    no LLM (symbolic or prm backend) or its metrics cannot be read."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://{host}:{metrics_port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, Any] = {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0, "config_errors": 0}
    calls: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "sgpo_judge_llm_tokens_total":
                out[f"{s.labels['kind']}_tokens"] = int(s.value)
            elif s.name == "sgpo_judge_llm_cost_total":
                out["cost"] = s.value
            elif s.name == "sgpo_judge_llm_config_errors_total":
                out["config_errors"] += int(s.value)
            elif s.name == "sgpo_judge_llm_calls_total":
                calls[s.labels["outcome"]] = int(s.value)
    if not calls:
        return {}
    return {**out, "calls": calls}
