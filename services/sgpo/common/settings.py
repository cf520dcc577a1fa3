"""Service configuration: one pydantic-settings class per service, from a TOML file and SGPO_* env vars.

Precedence: explicit overrides > environment (`SGPO_<SERVICE>__<FIELD>`, nested with `__`) > the TOML
file's `[<service>]` table (plus a shared top-level `[algo]` table for services with an `algo` field) >
defaults. Unknown keys are rejected everywhere.
"""

from __future__ import annotations

import os
import re
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_DATA", default=None)
SHARED_SECTIONS = ("algo",)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message says where it came from and how to fix it."""


class _FileSection(PydanticBaseSettingsSource):
    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class ServiceConfig(BaseSettings):
    """Fields every service has. Subclasses set `service` and `env_prefix = "SGPO_<SERVICE>__"`."""

    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__", validate_default=True)
    service: ClassVar[str] = ""

    host: str = "127.0.0.1"
    """Address the gRPC server binds (0.0.0.0 in containers)."""
    port: int = Field(0, ge=0, le=65535)
    """gRPC port; 0 picks a free one (printed at start)."""
    metrics_port: int = Field(0, ge=0, le=65535)
    """Prometheus /metrics port; 0 picks a free one (printed at start)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log verbosity; logs are JSON lines on stderr."""
    grace_period_s: float = Field(10.0, ge=0.0)
    """On SIGTERM: stop taking requests and give those in flight this long to finish."""
    max_workers: int = Field(16, ge=1)
    """gRPC server worker threads."""
    service_token_file: str | None = None
    """File holding the token every service of a deployment shares (gRPC `authorization: Bearer`; see
    sgpo.common.auth). `SGPO_SERVICE_TOKEN` or `SGPO_SERVICE_TOKEN_FILE` take precedence. None anywhere:
    gRPC is not authenticated (local use on loopback)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSection(settings_cls))


C = TypeVar("C", bound=ServiceConfig)


def read_config_file(path: Path | str, known_sections: set[str]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing TOML file with --config")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    unknown = sorted(set(doc) - known_sections - set(SHARED_SECTIONS))
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown section(s) {unknown}; "
            f"known: {sorted(known_sections | set(SHARED_SECTIONS))}"
        )
    return doc


_SECRET_NAME = re.compile(r"(key|token|password|secret|credential)", re.IGNORECASE)
REDACTED = "<redacted>"


def is_secret_name(name: object) -> bool:
    """A field whose value is a secret by its name (api_key, api_keys, service_token, redis password...)."""
    return isinstance(name, str) and bool(_SECRET_NAME.search(name)) and not name.endswith("_file")


def redact(value: Any) -> Any:
    """`value` with every secret-named entry of a mapping (at any depth) replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(k) else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _given(loc: tuple[Any, ...], value: Any) -> str:
    """The rejected input as an error shows it: never the value of a secret field (a key, token, password)."""
    if any(is_secret_name(part) for part in loc):
        return REDACTED
    return repr(redact(value))


def _check_env_names(cls: type[ServiceConfig]) -> None:
    """pydantic-settings ignores env vars that name no field; a typo there would silently keep a default."""
    prefix = f"SGPO_{cls.service.upper()}__"
    known = {name.upper() for name in cls.model_fields}
    unknown = sorted(
        k
        for k in os.environ
        if k.upper().startswith(prefix) and k[len(prefix) :].split("__")[0].upper() not in known
    )
    if unknown:
        raise ConfigError(
            f"unknown {cls.service} setting(s) in the environment: {unknown}; "
            f"{cls.service} fields are {sorted(cls.model_fields)}"
        )


def load_config(
    cls: type[C], path: Path | str | None = None, known_sections: set[str] | None = None, **overrides: Any
) -> C:
    """Resolve a service's config from the TOML file at `path` (its `[service]` table), env and overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        doc = read_config_file(path, known_sections or {cls.service})
        section = doc.get(cls.service, {})
        if not isinstance(section, dict):
            raise ConfigError(f"[{cls.service}] in {path} must be a table")
        data = dict(section)
        if "algo" in cls.model_fields and "algo" in doc and "algo" not in data:
            data["algo"] = doc["algo"]
    _check_env_names(cls)
    token = _FILE_DATA.set(data)
    try:
        return cls(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or cls.service
            env = f"SGPO_{cls.service.upper()}__{loc.upper().replace('.', '__')}"
            lines.append(
                f"  {loc}: {err['msg']} (given {_given(err['loc'], err.get('input'))}; "
                f"set it in [{cls.service}] or {env})"
            )
        raise ConfigError(f"invalid {cls.service} config:\n" + "\n".join(lines)) from None
    except SettingsError as e:  # an env value that is not JSON where a list or table is expected
        raise ConfigError(
            f"invalid {cls.service} config: {e}; lists and tables are JSON in the environment "
            f'(SGPO_{cls.service.upper()}__FIELD=\'["a", "b"]\')'
        ) from None
    finally:
        _FILE_DATA.reset(token)
