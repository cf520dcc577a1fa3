"""Service config: TOML file, SGPO_* env overrides, unknown keys rejected, errors that say how to fix."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic_settings import SettingsConfigDict

from sgpo.common.settings import ConfigError, ServiceConfig, load_config
from sgpo.core import AlgoConfig


class DemoConfig(ServiceConfig):
    model_config = SettingsConfigDict(env_prefix="SGPO_DEMO__", extra="forbid", env_nested_delimiter="__")
    service: ClassVar[str] = "demo"

    workers: int = 2
    """How many workers."""
    algo: AlgoConfig = AlgoConfig()
    """Algorithm settings."""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sgpo.toml"
    path.write_text(text)
    return path


def test_defaults_file_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "[demo]\nworkers = 5\nport = 7000\n[algo]\nbeta = 3.0\n")
    assert load_config(DemoConfig).workers == 2
    cfg = load_config(DemoConfig, path)
    assert (cfg.workers, cfg.port, cfg.algo.beta) == (5, 7000, 3.0)
    monkeypatch.setenv("SGPO_DEMO__WORKERS", "9")
    monkeypatch.setenv("SGPO_DEMO__ALGO__GAMMA", "0.25")
    cfg = load_config(DemoConfig, path)
    assert (cfg.workers, cfg.algo.beta, cfg.algo.gamma) == (9, 3.0, 0.25)


def test_unknown_key_is_rejected_with_its_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"workerz.*SGPO_DEMO__WORKERZ"):
        load_config(DemoConfig, write(tmp_path, "[demo]\nworkerz = 5\n"))
    with pytest.raises(ConfigError, match=r"algo.bta"):
        load_config(DemoConfig, write(tmp_path, "[algo]\nbta = 5\n"))


def test_unknown_section_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['demox'\]"):
        load_config(DemoConfig, write(tmp_path, "[demox]\nworkers = 5\n"))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(DemoConfig, write(tmp_path, "[demo\n"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DemoConfig, tmp_path / "missing.toml")


def test_invalid_value_says_what_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGPO_DEMO__PORT", "99999")
    with pytest.raises(ConfigError, match=r"port: .*given '99999'"):
        load_config(DemoConfig)


def test_misspelled_env_var_is_an_error_not_a_silent_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGPO_DEMO__WORKRS", "9")
    with pytest.raises(ConfigError, match=r"SGPO_DEMO__WORKRS.*demo fields are \[.*'workers'"):
        load_config(DemoConfig)
    monkeypatch.delenv("SGPO_DEMO__WORKRS")
    monkeypatch.setenv("SGPO_DEMO__ALGO__BETA", "2.0")  # a nested field under a known one is fine
    assert load_config(DemoConfig).algo.beta == 2.0
