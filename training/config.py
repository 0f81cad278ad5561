"""Run configuration: dataclass defaults, then a YAML/JSON file, then ``--set key=value`` / typed CLI flags."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from ganserve.core.errors import GanserveError, first_line

RECIPES = Path(__file__).resolve().parent / "configs"  # the recipe configs, installed with the package


@dataclass
class CommonConfig:
    """Settings every application shares: data, batch, optimizer schedule and the trainer's periods."""

    seed: int = 0
    # folder of HR images (recursive png/jpg); empty = the built-in photos. Marked as user data: ship refuses it.
    data_dir: str = dataclasses.field(default="", metadata={"user_data": True})
    batch_size: int = 16
    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.999
    lr_schedule: str = "constant"  # constant | cosine | step (x0.1 at half the run)
    lr_min_factor: float = 0.0  # cosine ends at lr * lr_min_factor
    warmup_steps: int = 0
    log_every: int = 10
    eval_every: int = 500  # 0 = only at the end
    sample_every: int = 250  # 0 = only at the end
    ckpt_every: int = 250  # 0 = only at the end
    device: str = "cpu"  # cpu | cuda | auto
    # mixed precision of the training steps: off (fp32) | bf16 (torch.autocast on the forward passes and losses;
    # weights, optimizer state and gradients stay fp32) | auto (bf16 where the CPU has bf16 hardware -- AVX512-BF16
    # or AMX -- or on CUDA, else off: without it bf16 is emulated and slower)
    autocast: str = "off"


def user_data(config: Any) -> dict[str, Any]:
    """The config's set values that point at user data (fields marked ``metadata={"user_data": True}``)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if f.metadata.get("user_data") and getattr(config, f.name)}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a mapping of config values from a .yaml/.yml/.json file."""
    path = Path(path)
    if not path.is_file():
        raise GanserveError(f"config file {path}: no such file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise GanserveError(f"config file {path}: unreadable ({first_line(exc)})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GanserveError(f"config file {path}: must hold a mapping of key: value")
    return data


def parse_set(items: list[str] | None) -> dict[str, str]:
    """``["lr=5e-4", "batch_norm=false"]`` -> ``{"lr": "5e-4", ...}`` (strings; typed later by ``coerce``)."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise GanserveError(f"--set {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def coerce_value(key: str, value: Any, kind: Any) -> Any:
    """One value (a string from the command line, a YAML scalar) as ``kind`` (bool, int, float, str; others as is)."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise GanserveError(f"config {key}={value!r}: expected true/false")
    if kind in (int, float):
        if isinstance(value, bool):
            raise GanserveError(f"config {key}={value!r}: expected a number")
        try:
            number = float(value) if kind is float else int(value.strip()) if isinstance(value, str) else int(value)
        except (TypeError, ValueError) as exc:
            raise GanserveError(f"config {key}={value!r}: expected {kind.__name__}") from exc
        if kind is int and isinstance(value, float) and value != int(value):
            raise GanserveError(f"config {key}={value!r}: expected an integer")
        return number
    if kind is str:
        return "" if value is None else str(value)
    return value


def coerce(config_cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Convert values (strings from the CLI, YAML scalars) to the field types of ``config_cls``."""
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            out[key] = value  # registry.merge_config reports unknown keys with the list of known ones
            continue
        out[key] = coerce_value(key, value, hints.get(key))
    return out


def config_dict(config: Any) -> dict[str, Any]:
    """A plain dict of a config dataclass (what checkpoints store)."""
    return dataclasses.asdict(config)
