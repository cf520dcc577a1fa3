"""Engines for the contract suite: every engine that can run here (hf on CPU; vllm with CUDA and vLLM)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sgpo.tasks.tiny import build_tiny_policy


def _vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


ENGINE_PARAMS = [
    pytest.param("hf", id="hf"),
    pytest.param(
        "vllm",
        id="vllm",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(not _vllm_available(), reason="needs vLLM and a CUDA GPU"),
        ],
    ),
]


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight tiny policy (seed 0): fast to build, fine for engine mechanics."""
    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny", seed=0)


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture with other weights (seed 1), as a trainer would publish."""
    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny-v1", seed=1)


def make_engine(kind: str, path: Path, **kw: Any) -> Any:
    if kind == "hf":
        from sgpo.generator.hf import HFEngine

        return HFEngine(str(path), device="cpu", dtype="float32", **kw)
    from sgpo.generator.vllm_engine import VLLMEngine

    return VLLMEngine(str(path), dtype="float32", gpu_memory_utilization=0.3, **kw)


@pytest.fixture(scope="module", params=ENGINE_PARAMS)
def engine(request: pytest.FixtureRequest, tiny_policy: Path) -> Iterator[Any]:
    e = make_engine(request.param, tiny_policy)
    yield e
    e.close()
