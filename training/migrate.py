"""Configs written before networks were named: their flat network keys (``blocks``, ``channels``, ``d_channels``,
...) move into the network specs (``generator: {blocks: ..., channels: ...}``) when a config is read.

Applied to every layer of config values (a checkpoint's config, a shipped entry's record, a config file, ``--set``
overrides), so old checkpoints, recipes and command lines keep working. Weights need no renaming: the networks
kept their module names, so old state dicts load strictly as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ganserve.core.errors import GanserveError
from ganserve.training.networks.specs import as_spec


@dataclass(frozen=True)
class NetworkKeys:
    """Old flat config keys that now live in one network spec, each mapped to the network's argument."""

    field: str
    arguments: Mapping[str, str]
    unset_if_empty: frozenset[str] = frozenset()  # old keys whose "" meant "not set" (CycleGAN's g_norm)
    type_key: str = ""  # old key whose value chose the network (SSGAN's d_arch) ...
    types: Mapping[str, tuple[str, frozenset[str]]] = field(default_factory=dict)  # ... value -> (type, its keys)


_SR_GENERATOR = NetworkKeys("generator", {k: k for k in ("blocks", "channels", "batch_norm", "bicubic_skip")})
_PATCHGAN = NetworkKeys("discriminator", {"ndf": "ndf", "d_layers": "layers", "d_max_mult": "max_mult", "norm": "norm"})
_SSGAN_D_KEYS = {"d_widths": "widths", "input_noise": "input_noise", "hidden_noise": "hidden_noise",
                 "dropout": "dropout"}

RULES: dict[str, tuple[NetworkKeys, ...]] = {
    "srresnet": (_SR_GENERATOR,),
    "srgan": (_SR_GENERATOR, NetworkKeys("discriminator", {"d_channels": "channels"})),
    "pix2pix": (NetworkKeys("generator", {k: k for k in ("depth", "ngf", "max_mult", "norm", "dropout")}), _PATCHGAN),
    "cyclegan": (
        NetworkKeys("generator", {"ngf": "ngf", "blocks": "blocks", "norm": "norm", "g_norm": "norm",
                                  "residual": "residual"}, unset_if_empty=frozenset({"g_norm"})),
        _PATCHGAN,
    ),
    "attentive-gan": (
        NetworkKeys("generator", {k: k for k in ("time_steps", "arn_channels", "arn_blocks", "ae_width", "residual")}),
        NetworkKeys("discriminator", {"d_channels": "channels"}),
    ),
    "face-aging": (
        NetworkKeys("generator", {"g_channels": "channels", "g_blocks": "blocks"}),
        NetworkKeys("discriminator", {"d_channels": "channels"}),
    ),
    "ssgan": (
        NetworkKeys("discriminator", _SSGAN_D_KEYS, type_key="d_arch", types={
            "mlp": ("ssgan-mlp", frozenset({"d_widths", "input_noise", "hidden_noise"})),
            "conv": ("ssgan-conv", frozenset({"d_widths", "input_noise", "dropout"})),
        }),
        NetworkKeys("generator", {"g_widths": "widths"}),
    ),
}


def old_keys(model: str) -> set[str]:
    """The flat keys ``model``'s configs had before its networks were named."""
    return {k for rule in RULES.get(model, ()) for k in (*rule.arguments, *([rule.type_key] if rule.type_key else []))}


def migrate_config(model: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with ``model``'s old flat network keys moved into its network specs (a new-style mapping comes
    back unchanged). Only keys present move; the specs are layered over the defaults later."""
    out = dict(values)
    rules = RULES.get(model, ())
    used = old_keys(model) & set(out)
    if not used:
        return out
    for rule in rules:
        spec = _spec(out.get(rule.field), rule.field)
        keys = list(rule.arguments)
        if rule.type_key and rule.type_key in out:
            choice = out[rule.type_key]
            if choice not in rule.types:
                raise GanserveError(f"{model}: {rule.type_key} must be one of {', '.join(rule.types)}, got {choice!r}")
            spec["type"], wanted = rule.types[choice]
            keys = [k for k in keys if k in wanted]
        for old in keys:
            if old in out and not (old in rule.unset_if_empty and out[old] in ("", None)):
                spec[rule.arguments[old]] = out[old]
        if spec:
            out[rule.field] = spec
    for old in used:
        out.pop(old)
    return out


def _spec(value: Any, key: str) -> dict[str, Any]:
    return {} if value is None else as_spec(value, key)
