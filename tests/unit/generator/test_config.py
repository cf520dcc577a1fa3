"""GeneratorConfig: TOML + env resolution and the cross-field rules' messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from sgpo.common.settings import ConfigError, load_config
from sgpo.generator.config import GeneratorConfig


def test_toml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[generator]\nmodel = "/models/p"\nmax_batch_size = 32\nhttp_port = 8123\n')
    monkeypatch.setenv("SGPO_GENERATOR__MAX_BATCH_SIZE", "8")
    cfg = load_config(GeneratorConfig, f)
    assert (cfg.model, cfg.max_batch_size, cfg.http_port, cfg.engine) == ("/models/p", 8, 8123, "hf")


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ('engine = "vllm"\ndevice = "cpu"', "runs where the installed vLLM build runs"),
        ("kv_cache_memory_bytes = 1024", "kv_cache_memory_bytes"),
        ('engine = "onnx"', "engine"),
        ("max_batch_size = 0", "max_batch_size"),
        ('model = "  "', "model is empty"),
        ("bogus = 1", "bogus"),
    ],
)
def test_bad_config_says_what_to_fix(tmp_path: Path, section: str, needle: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(f"[generator]\n{section}\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(GeneratorConfig, f)
