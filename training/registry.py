"""Models registered by name with their typed config dataclass: ``@register_model("srresnet", SRResNetConfig)``."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from ganserve.core.errors import GanserveError

_MODELS: dict[str, tuple[type, type]] = {}
# Modules that register models when imported; listed here so `available()` sees every application.
MODEL_MODULES = ("ganserve.training.models.srgan", "ganserve.training.models.ssgan")
MODEL_MODULES += ("ganserve.training.models.dcgan", "ganserve.training.models.vae", "ganserve.training.models.wae", "ganserve.training.models.aegan", "ganserve.training.models.cvaegan")
MODEL_MODULES += ("ganserve.training.models.attentive_gan",)
MODEL_MODULES += ("ganserve.training.models.pix2pix", "ganserve.training.models.cyclegan")
MODEL_MODULES += ("ganserve.training.models.face_aging",)


def register_model(name: str, config_cls: type) -> Callable[[type], type]:
    """Class decorator: register an Application subclass under ``name`` with its config dataclass."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config for {name!r} must be a dataclass")

    def wrap(app_cls: type) -> type:
        if name in _MODELS and _MODELS[name][0] is not app_cls:
            raise ValueError(f"model name {name!r} registered twice")
        _MODELS[name] = (app_cls, config_cls)
        app_cls.model_name = name
        app_cls.config_cls = config_cls
        return app_cls

    return wrap


def _load_all() -> None:
    for mod in MODEL_MODULES:
        importlib.import_module(mod)


def available() -> list[str]:
    _load_all()
    return sorted(_MODELS)


def lookup(name: str) -> tuple[type, type]:
    """(Application class, config class) for a registered name; a clear error for an unknown one."""
    _load_all()
    if name not in _MODELS:
        raise GanserveError(f"unknown model {name!r}; registered: {', '.join(sorted(_MODELS)) or 'none'}")
    return _MODELS[name]


def make_config(name: str, values: dict[str, Any] | None = None) -> Any:
    """Build a model's config from defaults plus ``values``; unknown keys are a clear error."""
    _, config_cls = lookup(name)
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise GanserveError(f"{name}: unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return config_cls(**values)


def build(name: str, config: Any = None) -> Any:
    """Instantiate a registered application from a config object or a dict of overrides."""
    app_cls, config_cls = lookup(name)
    if config is None or isinstance(config, dict):
        config = make_config(name, config)
    elif not isinstance(config, config_cls):
        raise GanserveError(f"{name}: expected a {config_cls.__name__}, got {type(config).__name__}")
    return app_cls(config)
