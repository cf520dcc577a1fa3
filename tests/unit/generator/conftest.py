"""Tiny policies for the generator's unit tests (the engine contract on both engines: tests/integration/test_generator_engines.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgpo.tasks.tiny import build_tiny_policy


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random-weight tiny policy (seed 0): fast to build, fine for engine mechanics."""
    return build_tiny_policy(tmp_path_factory.mktemp("policy") / "tiny", seed=0)
