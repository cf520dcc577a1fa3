"""Loading a service's config class and resolving what a service must not resolve itself (model aliases)."""

from __future__ import annotations

import importlib
from typing import Any

from sgpo.common.services import SERVICES


def config_class(name: str) -> Any:
    """The pydantic config class of service `name` (imported on demand)."""
    module_path, cls_name = SERVICES[name][0].rsplit(":", 1)
    return getattr(importlib.import_module(module_path), cls_name)


def resolve_service_config(name: str, cfg: Any) -> Any:
    """The config a service is started with: the generator's `model` alias ('tiny', 'tiny-random') replaced by
    the policy folder it names (pretrained on first use), the alias kept as the served model name."""
    if name != "generator":
        return cfg
    from sgpo.tasks.models import resolve_model

    path = resolve_model(cfg.model)
    if path == cfg.model:
        return cfg
    return cfg.model_copy(update={"model": path, "served_model_name": cfg.served_model_name or cfg.model})
