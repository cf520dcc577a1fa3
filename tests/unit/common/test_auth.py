"""sgpo.common.auth and the secret handling of settings: token resolution, secret files, redaction,
weights-root confinement (the servers are tested in tests/integration/test_security.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from sgpo.common import auth
from sgpo.common.settings import ConfigError, load_config, redact
from sgpo.generator.config import GeneratorConfig
from sgpo.generator.engine import WeightsRejectedError, confine_weights_uri, weight_files


def test_token_comes_from_env_then_file_then_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    monkeypatch.delenv(auth.TOKEN_FILE_ENV, raising=False)
    assert auth.resolve_service_token() is None
    setting = auth.write_secret_file(tmp_path / "a", "from-setting")
    assert auth.resolve_service_token(setting) == "from-setting"
    env_file = auth.write_secret_file(tmp_path / "b", "from-env-file")
    monkeypatch.setenv(auth.TOKEN_FILE_ENV, str(env_file))
    assert auth.resolve_service_token(setting) == "from-env-file"
    monkeypatch.setenv(auth.TOKEN_ENV, "from-env")
    assert auth.resolve_service_token(setting) == "from-env"


def test_secret_files_are_private_and_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    path = auth.write_secret_file(tmp_path / "deep" / "key", "s3cret-value")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.read_secret_file(path) == "s3cret-value"
    (tmp_path / "empty").write_text("\n  \n")
    with pytest.raises(ConfigError, match="empty") as e:
        auth.read_secret_file(tmp_path / "empty", "service token")
    with pytest.raises(ConfigError, match="cannot read"):
        auth.read_secret_file(tmp_path / "missing")
    assert "s3cret" not in str(e.value)
    (tmp_path / "keys").write_text("# comment\nk1\n\nk2\n")
    assert auth.read_secret_lines(tmp_path / "keys") == ["k1", "k2"]
    generated = auth.generated_secret_path("judge", "api-key")
    assert stat.S_IMODE(generated.parent.stat().st_mode) == 0o700
    generated.parent.rmdir()


def test_config_errors_never_echo_secret_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGPO_GENERATOR__API_KEY", "leaky-key-value")
    monkeypatch.setenv("SGPO_GENERATOR__MAX_N", "0")
    with pytest.raises(ConfigError) as e:
        load_config(GeneratorConfig)
    assert "max_n" in str(e.value) and "leaky-key-value" not in str(e.value)
    nested = {"backend": {"api_key": "x", "base_url": "u"}, "api_keys": ["y"], "n": 1}
    assert redact(nested) == {
        "backend": {"api_key": "<redacted>", "base_url": "u"},
        "api_keys": "<redacted>",
        "n": 1,
    }
    assert redact({"service_token_file": "/run/secret"}) == {"service_token_file": "/run/secret"}


def _weights(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x")
    return folder


def test_confinement_refuses_everything_that_resolves_outside_the_root(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", _weights(tmp_path / "outside")
    inside = _weights(root / "v1")
    assert confine_weights_uri(str(inside), root) == str(inside.resolve())
    assert confine_weights_uri("v1", root) == str(inside.resolve())  # relative to the root
    assert confine_weights_uri(str(outside), None) == str(outside)  # no root: unchanged
    (root / "link").symlink_to(outside)
    (root / "v2").mkdir()
    (root / "v2" / "model.safetensors").symlink_to(outside / "model.safetensors")
    messages = set()
    for uri in (
        str(outside),
        f"file://{outside}",
        str(root / ".." / "outside"),
        "../outside",
        "/nope/x",
        str(root / "link"),
        str(root / "v2"),
        "/etc/passwd",
    ):
        with pytest.raises(WeightsRejectedError) as e:
            confine_weights_uri(uri, root)
        messages.add(e.value.message)
    assert len(messages) == 1 and "weights_root" in messages.pop()


@pytest.mark.parametrize(
    "shard", ["../outside/model.safetensors", "/abs/model.safetensors", "a/b.safetensors", "..", 3]
)
def test_index_shards_must_be_file_names_in_the_folder(tmp_path: Path, shard: object) -> None:
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"t": shard}}))
    with pytest.raises(WeightsRejectedError, match="outside its folder"):
        weight_files(str(folder))


def test_a_process_token_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.TOKEN_ENV, "env-token")
    try:
        auth.set_process_token("process-token")
        assert auth.process_token() == "process-token"
        auth.set_process_token(None)
        assert auth.process_token() is None
    finally:
        auth.reset_process_token()
    assert auth.process_token() == "env-token"
    assert os.environ[auth.TOKEN_ENV] == "env-token"
