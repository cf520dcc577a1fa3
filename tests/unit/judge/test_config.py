"""JudgeConfig: backend variants keyed by `type`, from TOML and env; errors that say how to fix them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sgpo.common.settings import ConfigError, load_config
from sgpo.judge.config import CascadeBackend, JudgeConfig, LlmBackend, PrmBackend, SymbolicBackend


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_default_is_symbolic_with_shared_algo_table(tmp_path: Path) -> None:
    cfg = load_config(JudgeConfig, write(tmp_path, '[algo]\nbeta = 3.0\nrts_unit = "steps"\n'))
    assert isinstance(cfg.backend, SymbolicBackend)
    assert (cfg.algo.beta, cfg.algo.rts_unit) == (3.0, "steps")


def test_backend_table_selects_the_variant(tmp_path: Path) -> None:
    cfg = load_config(
        JudgeConfig,
        write(
            tmp_path, '[judge.backend]\ntype = "cascade"\n[judge.backend.llm]\nbase_url = "http://h:1/v1"\n'
        ),
    )
    assert isinstance(cfg.backend, CascadeBackend)
    assert cfg.backend.llm.base_url == "http://h:1/v1"
    assert cfg.backend.symbolic.chain_check


def test_env_selects_backend_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SGPO_JUDGE__BACKEND__TYPE", "llm")
    monkeypatch.setenv("SGPO_JUDGE__BACKEND__MAX_CONCURRENCY", "3")
    monkeypatch.setenv("SGPO_JUDGE__API_KEYS", '["k1", "k2"]')
    cfg = load_config(JudgeConfig)
    assert isinstance(cfg.backend, LlmBackend) and cfg.backend.max_concurrency == 3
    assert [k.get_secret_value() for k in cfg.api_keys] == ["k1", "k2"]
    assert "k1" not in cfg.model_dump_json()  # secrets never print


def test_prm_needs_a_model_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs a model: set model_path"):
        load_config(JudgeConfig, write(tmp_path, '[judge.backend]\ntype = "prm"\n'))
    cfg = load_config(JudgeConfig, write(tmp_path, '[judge.backend]\ntype = "prm"\nmodel_path = "/m"\n'))
    assert isinstance(cfg.backend, PrmBackend) and cfg.backend.model_path == Path("/m")


def test_unknown_backend_and_keys_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"backend.*symbolic.*llm.*prm.*cascade"):
        load_config(JudgeConfig, write(tmp_path, '[judge.backend]\ntype = "oracle"\n'))
    with pytest.raises(ConfigError, match=r"chain_chek"):
        load_config(JudgeConfig, write(tmp_path, "[judge.backend]\nchain_chek = false\n"))


def test_ports_must_differ() -> None:
    with pytest.raises(ValueError, match="http_port 7000 is also the gRPC or metrics port"):
        JudgeConfig(port=7000, http_port=7000)
    assert JudgeConfig(port=7000, http_port=7000, http_enabled=False).http_port == 7000


# ---- request profiles -----------------------------------------------------------------------------------------
def test_request_profiles_send_what_each_kind_of_endpoint_takes() -> None:
    from sgpo.judge.config import LlmBackend

    assert LlmBackend().request_fields() == {"temperature": 0.0, "max_tokens": 4096}
    r = LlmBackend(profile="reasoning", reasoning_effort="high", max_tokens=32000, extra_body={"seed": 1})
    assert r.request_fields() == {"max_completion_tokens": 32000, "reasoning_effort": "high", "seed": 1}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"profile": "reasoning", "temperature": 0.0}, 'remove it, or use profile = "chat"'),
        ({"reasoning_effort": "low"}, 'needs profile = "reasoning"'),
        ({"extra_body": {"max_tokens": 5}}, "set max_tokens instead"),
        ({"profile": "reasoning", "extra_body": {"temperature": 1}}, "set temperature instead"),
        ({"extra_body": {"messages": []}}, "remove it"),
        ({"prompt_template": "{problem} {steps}"}, "does not format"),
        ({"prompt_template": "{problem}"}, "must contain {tagged_response}"),
    ],
)
def test_inconsistent_profiles_fail_at_start_up(fields: dict[str, object], message: str) -> None:
    from pydantic import ValidationError

    from sgpo.judge.config import LlmBackend

    with pytest.raises(ValidationError, match=re.escape(message)):
        LlmBackend(**fields)  # type: ignore[arg-type]


def test_type_llm_reads_the_cascade_spelling_of_its_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose.yml sets SGPO_JUDGE__BACKEND__LLM__*: the same variables serve `llm` and `cascade`."""
    from sgpo.common.settings import load_config
    from sgpo.judge.config import JudgeConfig

    monkeypatch.setenv("SGPO_JUDGE__BACKEND__TYPE", "llm")
    monkeypatch.setenv("SGPO_JUDGE__BACKEND__LLM__BASE_URL", "http://judge-llm:8001/v1")
    monkeypatch.setenv("SGPO_JUDGE__BACKEND__MODEL", "critic")
    b = load_config(JudgeConfig).backend
    assert (b.type, b.base_url, b.model) == ("llm", "http://judge-llm:8001/v1", "critic")  # type: ignore[union-attr]
