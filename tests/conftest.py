"""Shared fixtures. Redis is the real server on this machine (SGPO_TEST_REDIS_URL overrides)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("SGPO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        pytest.fail(f"these tests need a Redis server at {REDIS_URL} (set SGPO_TEST_REDIS_URL): {e}")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix (used as the run id); every key under it is deleted afterwards."""
    import redis

    run_id = f"test-{uuid.uuid4().hex[:12]}"
    yield run_id
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"sgpo:{run_id}:*", count=1000))
    if keys:
        client.delete(*keys)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`vllm` tests need vLLM, which lives in its own environment (it would break this one's torchvision)."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    skip = pytest.mark.skip(
        reason="needs vLLM: scripts/test.sh runs these in the environment of scripts/vllm-env.sh"
    )
    for item in items:
        if item.get_closest_marker("vllm") is not None:
            item.add_marker(skip)
