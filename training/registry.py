"""Applications registered by name with their typed config dataclass: ``@register_model("srresnet", SRResNetConfig)``.

The built-in applications are the modules of ``training/applications/`` (``MODEL_MODULES``); plugins
(``training/plugins.py``) add others from outside the repository. Networks have their own registry (``training/networks``).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any, Callable

from ganserve.core.errors import GanserveError
from ganserve.training import applications
from ganserve.training.config import coerce
from ganserve.training.migrate import migrate_config
from ganserve.training.networks.specs import finish_specs, layer_values

_MODELS: dict[str, tuple[type, type]] = {}
# Every module of training/applications/ is imported to find the built-in applications, so a new one needs no list
# edited here (plugins, training/plugins.py, bring applications from outside the repository).
MODEL_MODULES = tuple(f"{applications.__name__}.{m.name}" for m in pkgutil.iter_modules(applications.__path__)
                      if not m.ispkg)


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
    from ganserve.training.plugins import load_plugins

    for mod in MODEL_MODULES:
        importlib.import_module(mod)
    load_plugins()


def available() -> list[str]:
    """Every registered application name: the built-in ones and the plugins'."""
    _load_all()
    return sorted(_MODELS)


def lookup(name: str) -> tuple[type, type]:
    """(Application class, config class) for a registered name; a clear error for an unknown one."""
    _load_all()
    if name not in _MODELS:
        raise GanserveError(f"unknown model {name!r}; registered: {', '.join(sorted(_MODELS)) or 'none'}")
    return _MODELS[name]


def merge_config(model: str, *layers: Mapping[str, Any] | None) -> Any:
    """The config object for ``model``: its defaults, then each layer of values in turn (later wins; None skipped).

    The one path every config takes (training, resume, a file and --set, checkpoint rebuilds, imports): each layer
    is migrated on its own (old flat network keys, training/migrate.py) and laid over the ones before it (network
    specs merge per argument, networks/specs.py); then the values are typed by ``coerce``, an unknown key is an
    error naming the known ones, and each network spec is completed from its defaults."""
    _, config_cls = lookup(model)
    values: dict[str, Any] = {}
    for layer in layers:
        values = layer_values(config_cls, values, migrate_config(model, layer or {}))
    values = coerce(config_cls, values)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise GanserveError(f"{model}: unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    return config_cls(**finish_specs(config_cls, values))


def make_config(name: str, values: Mapping[str, Any] | None = None) -> Any:
    """A model's config from its defaults plus one layer of ``values`` (merge_config)."""
    return merge_config(name, values)


def build(name: str, config: Any = None) -> Any:
    """Instantiate a registered application from a config object or a dict of overrides."""
    app_cls, config_cls = lookup(name)
    if config is None or isinstance(config, dict):
        config = make_config(name, config)
    elif not isinstance(config, config_cls):
        raise GanserveError(f"{name}: expected a {config_cls.__name__}, got {type(config).__name__}")
    return app_cls(config)
