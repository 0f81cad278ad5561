"""Networks registered by name and built from a spec ``{"type": name, **arguments}``.

Any module can register a network (``@register_network("srresnet")`` on a class or factory function), including one
outside the repository; ``build_network`` checks the arguments against the constructor and records the spec on the
built module, so an application can describe (and a checkpoint can rebuild) exactly what it trained.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

from ganserve.core.errors import GanserveError

Factory = TypeVar("Factory", bound=Callable[..., Any])

_NETWORKS: dict[str, Callable[..., Any]] = {}
# Every module of training/networks/ is imported to find the built-in networks, so a new family is one new file and
# no list to edit (plugins, training/plugins.py, bring networks from outside the repository).
_HERE = __name__.rpartition(".")[0]
NETWORK_MODULES = tuple(f"{_HERE}.{m.name}" for m in pkgutil.iter_modules(importlib.import_module(_HERE).__path__)
                        if not m.ispkg and m.name not in ("registry", "specs", "layouts"))


def register_network(name: str) -> Callable[[Factory], Factory]:
    """Decorator: register a network class (or a function returning a module) under ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise GanserveError(f"a network name must be a non-empty string, got {name!r}")

    def wrap(factory: Factory) -> Factory:
        known = _NETWORKS.get(name)
        if known is not None and known is not factory and _origin(known) != _origin(factory):
            raise GanserveError(f"network name {name!r} registered twice ({_origin(known)} and {_origin(factory)}); "
                                f"registered: {', '.join(sorted(_NETWORKS))}")
        _NETWORKS[name] = factory
        return factory

    return wrap


def _origin(factory: Callable[..., Any]) -> str:
    return f"{factory.__module__}.{getattr(factory, '__qualname__', repr(factory))}"


def _load_builtin() -> None:
    for module in NETWORK_MODULES:
        importlib.import_module(module)


def available_networks() -> list[str]:
    """The registered network names: the built-in ones, plugins' and any registered since."""
    _load_builtin()
    return sorted(_NETWORKS)


def lookup_network(name: Any) -> Callable[..., Any]:
    """The factory registered as ``name``; a one-line error naming the registered ones for anything else."""
    _load_builtin()
    if isinstance(name, str) and name not in _NETWORKS:
        from ganserve.training.plugins import load_plugins

        load_plugins()
    if not isinstance(name, str) or name not in _NETWORKS:
        raise GanserveError(f"unknown network type {name!r}; registered: {', '.join(sorted(_NETWORKS))}")
    return _NETWORKS[name]


def network_arguments(name: str) -> dict[str, inspect.Parameter] | None:
    """The keyword arguments network ``name`` accepts (None when it takes any, through ``**kwargs``)."""
    params = inspect.signature(lookup_network(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return {k: p for k, p in params.items()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def argument_types(name: str) -> dict[str, Any]:
    """Annotated types of network ``name``'s arguments (what string values from the command line become)."""
    factory = lookup_network(name)
    target = factory.__init__ if isinstance(factory, type) else factory
    try:
        return typing.get_type_hints(target)
    except Exception:  # an annotation that does not resolve: leave those values as given
        return {}


def split_spec(spec: Any, what: str = "network") -> tuple[str, dict[str, Any]]:
    """``{"type": name, **arguments}`` (or a bare name) -> (name, arguments); a clear error for anything else."""
    if isinstance(spec, str):
        return spec, {}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise GanserveError(f"{what}: expected a mapping with a 'type' naming a registered network "
                            f"(e.g. {{type: srresnet, blocks: 8}}), got {spec!r}")
    return spec["type"], {k: v for k, v in spec.items() if k != "type"}


def build_network(spec: Any, what: str = "network", **fixed: Any) -> Any:
    """Build the network a spec names. ``fixed`` are the arguments the caller needs (e.g. the application's
    scale): the spec may repeat them but not contradict them. Unknown arguments are a clear error."""
    name, arguments = split_spec(spec, what)
    factory = lookup_network(name)
    for key, need in fixed.items():
        if key in arguments and arguments[key] != need:
            raise GanserveError(f"{what} {name!r}: {key}={arguments[key]!r} does not fit here, which needs "
                                f"{key}={need!r}")
    arguments.update(fixed)
    accepted = network_arguments(name)
    if accepted is not None:
        unknown = sorted(set(arguments) - set(accepted))
        if unknown:
            raise GanserveError(f"{what} {name!r}: unknown argument(s) {', '.join(unknown)}; "
                                f"accepts: {', '.join(accepted) or 'none'}")
        missing = [k for k, p in accepted.items() if p.default is inspect.Parameter.empty and k not in arguments]
        if missing:
            raise GanserveError(f"{what} {name!r}: needs argument(s) {', '.join(missing)}")
    network = factory(**arguments)
    network.network_spec = {"type": name, **arguments}
    return network


def describe_network(network: Any) -> str:
    """The phrase a model card's architecture uses for a built network: its ``describe()``, else name(arguments)."""
    describe = getattr(network, "describe", None)
    if callable(describe):
        return str(describe())
    spec = dict(getattr(network, "network_spec", None) or {"type": type(network).__name__})
    name = spec.pop("type")
    return f"{name}({', '.join(f'{k}={v}' for k, v in sorted(spec.items()))})"
