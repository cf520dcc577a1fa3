"""Fixtures of the trainer unit tests: the tiny policy, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.trainer.fixtures import tiny_policy


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("policy") / "tiny")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> None:
    """The CI machine's 2 cores are shared: one thread per process avoids oversubscription (10x faster here)."""
    import torch

    torch.set_num_threads(1)
