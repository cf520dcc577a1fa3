"""The engine factory: the `Engine` subclass `cfg.engine` names, built with `cfg.model` (a folder or hub id).

Apart from `engine.py` (the protocol and the helpers the engines share), so the base module never imports
its own subclasses. The model is a path: aliases such as "tiny" are resolved by the launcher before the
service starts (`sgpo.tasks.models.resolve_model`).
"""

from __future__ import annotations

from typing import Any

from sgpo.generator.engine import Engine


def build_engine(cfg: Any) -> Engine:
    """The engine `cfg.engine` names, loaded from `cfg.model` (heavy imports happen here)."""
    path = cfg.model
    name = cfg.served_model_name or cfg.model
    if cfg.engine == "vllm":
        import os

        from sgpo.generator.vllm_engine import VLLMEngine

        if cfg.threads is not None:  # read by vLLM's CPU worker when it starts (GPU builds ignore them)
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
            os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
        return VLLMEngine(
            path,
            served_model_name=name,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            policy_version=cfg.policy_version,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            tensor_parallel_size=cfg.tensor_parallel_size,
            trust_remote_code=cfg.trust_remote_code,
            kv_cache_memory_bytes=cfg.kv_cache_memory_bytes,
            enforce_eager=cfg.enforce_eager,
            max_num_seqs=cfg.max_batch_size,
            max_prompt_chars=cfg.max_prompt_chars,
        )
    if cfg.threads is not None:
        import torch

        torch.set_num_threads(cfg.threads)
    from sgpo.generator.hf import HFEngine

    return HFEngine(
        path,
        device=cfg.device,
        dtype=cfg.dtype,
        max_batch_size=cfg.max_batch_size,
        batch_wait_s=cfg.batch_wait_s,
        max_model_len=cfg.max_model_len,
        policy_version=cfg.policy_version,
        served_model_name=name,
        trust_remote_code=cfg.trust_remote_code,
        max_prompt_chars=cfg.max_prompt_chars,
    )
