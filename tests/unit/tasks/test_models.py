"""Model aliases resolve in the launcher layer; services get a folder (sgpo.tasks.models, sgpo.launch.services)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgpo.generator.config import GeneratorConfig
from sgpo.launch.services import config_class, resolve_service_config
from sgpo.tasks.models import MODEL_ALIASES, resolve_model


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SGPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_tiny_random_resolves_to_a_model_folder_once(cache: Path) -> None:
    path = Path(resolve_model("tiny-random"))
    assert path.is_relative_to(cache) and (path / "config.json").is_file()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-random") == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # built once


def test_a_folder_or_hub_id_is_returned_as_is() -> None:
    assert resolve_model("/models/qwen") == "/models/qwen"
    assert resolve_model("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"
    assert set(MODEL_ALIASES) == {"tiny", "tiny-random", "tiny-chat"}


def test_tiny_chat_resolves_to_its_cache_folder(cache: Path) -> None:
    """A pretrained tiny chat policy in the cache (pretrain.json written last) is used as it is."""
    from sgpo.tasks.chat import CHAT_PRESET, build_chat_policy
    from sgpo.tasks.tiny import policy_dir

    folder = build_chat_policy(policy_dir(CHAT_PRESET, cache))
    (folder / "pretrain.json").write_text("{}")
    assert resolve_model("tiny-chat") == str(folder)


def test_sgpo_serve_gives_the_generator_a_folder_and_keeps_the_alias_as_its_name(cache: Path) -> None:
    cfg = GeneratorConfig.model_construct(model="tiny-random", served_model_name=None)
    resolved = resolve_service_config("generator", cfg)
    assert Path(resolved.model).is_dir() and resolved.served_model_name == "tiny-random"
    named = resolve_service_config("generator", cfg.model_copy(update={"served_model_name": "policy"}))
    assert named.served_model_name == "policy"
    folder = GeneratorConfig.model_construct(model="/models/x", served_model_name=None)
    assert resolve_service_config("generator", folder) is folder
    assert config_class("generator") is GeneratorConfig


def test_other_services_are_left_alone() -> None:
    cfg = config_class("verifier")()
    assert resolve_service_config("verifier", cfg) is cfg
