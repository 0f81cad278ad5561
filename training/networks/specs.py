"""Network specs as config values: the dataclass field, layering partial specs, dotted keys, and typing.

A config field made by ``network_field`` holds ``{"type": name, **arguments}``. Layers of config values (defaults,
a file, ``--set``, a checkpoint's config) combine per field: a spec without a ``type``, or of the same type, updates
the arguments before it; a bare name or a spec of another type replaces them. ``--set generator.blocks=8`` sets one
argument, and ``--set generator.type=NAME`` switches to that network with its own defaults.
"""

from __future__ import annotations

import collections.abc
import copy
import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from ganserve.core.errors import GanserveError
from ganserve.training.config import coerce_value
from ganserve.training.networks.registry import argument_types, split_spec


def network_field(network: str, **arguments: Any) -> Any:
    """A config dataclass field holding a network spec, by default ``{"type": network, **arguments}``."""
    default = {"type": network, **arguments}
    return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata={"network": True})


def network_fields(config_cls: type) -> dict[str, dict[str, Any]]:
    """The network fields of a config dataclass, each with its default spec."""
    return {f.name: f.default_factory() for f in dataclasses.fields(config_cls)  # type: ignore[misc]
            if f.metadata.get("network")}


def as_spec(value: Any, key: str) -> dict[str, Any]:
    """A network name or a spec mapping as a spec dict; a one-line error for anything else."""
    if isinstance(value, str):
        return {"type": value}
    if not isinstance(value, Mapping):
        raise GanserveError(f"config {key}: expected a network name or a mapping like {{type: NAME, ...}}, "
                            f"got {value!r}")
    return dict(value)


def merge_spec(base: Mapping[str, Any] | None, new: Any, key: str = "network") -> dict[str, Any]:
    """``new`` layered over ``base``: same type or no type updates the arguments, another type replaces them."""
    spec = as_spec(new, key)
    if base is None or ("type" in spec and spec["type"] != base.get("type")):
        return spec
    return {**base, **spec}


def layer_values(config_cls: type, values: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with one layer over it: network fields merge by ``merge_spec``, ``field.argument`` keys set one
    argument (``field.type`` first, so a new type starts from its own defaults); other keys replace."""
    fields = network_fields(config_cls)
    out = dict(values)
    dotted = {}
    for key, value in layer.items():
        field, dot, argument = key.partition(".")
        if dot and field in fields:
            dotted[(field, argument)] = value
        elif key in fields:
            out[key] = merge_spec(out.get(key), value, key)
        else:
            out[key] = value
    for (field, argument), value in sorted(dotted.items(), key=lambda item: item[0][1] != "type"):
        current = out.get(field) or fields[field]
        out[field] = merge_spec(current, {argument: value}, f"{field}.{argument}")
    return out


def finish_specs(config_cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Every network field of ``values`` layered over its default spec, its arguments typed by the network."""
    out = dict(values)
    for field, default in network_fields(config_cls).items():
        spec = merge_spec(default, out[field], field) if field in out else default
        out[field] = coerce_spec(spec, field)
    return out


def coerce_spec(spec: Any, what: str = "network") -> dict[str, Any]:
    """The spec with its arguments typed from the network's annotations (``"8"`` -> 8, ``"64,32"`` -> [64, 32])."""
    name, arguments = split_spec(spec, what)
    types = argument_types(name)
    return {"type": name, **{k: _coerce_argument(f"{what}.{k}", v, types.get(k)) for k, v in arguments.items()}}


def _coerce_argument(key: str, value: Any, kind: Any) -> Any:
    origin = typing.get_origin(kind)
    if origin in (list, tuple, collections.abc.Sequence) and int in typing.get_args(kind):
        parts = value.split(",") if isinstance(value, str) else [value] if isinstance(value, int) else value
        if not isinstance(parts, (list, tuple)):
            raise GanserveError(f"config {key}={value!r}: expected comma-separated integers")
        return [coerce_value(key, p, int) for p in parts if not (isinstance(p, str) and not p.strip())]
    return coerce_value(key, value, kind)
