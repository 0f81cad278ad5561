"""The model card and provenance of an export: task, sizes, training facts, quality, parity, source."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.core.export_spec import ExportSpec

# Checkpoint entries that are weights or optimizer state, never card material.
_BULK_KEYS = {"state", "optim", "optimizer", "format", "format_version"}


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def config_hash(config: Any) -> str:
    """A short stable hash of a config (dataclass or dict), to tell exports of different configs apart."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_facts(checkpoint: dict[str, Any], spec: ExportSpec) -> dict[str, Any]:
    """Every JSON-able checkpoint entry except weights (model, config, step, metrics, created, ...) plus card_extra."""
    facts = {k: v for k, v in checkpoint.items() if k not in _BULK_KEYS and _jsonable(v)}
    facts.update({k: v for k, v in spec.card_extra.items() if _jsonable(v)})
    return facts


def source_facts(checkpoint: dict[str, Any], sha256: str, fallback_config: Any = None) -> dict[str, Any]:
    """Where the weights came from: checkpoint sha256, training commit, config hash."""
    config = checkpoint.get("config", fallback_config)
    return {
        "checkpoint_sha256": sha256,
        "commit": str(checkpoint.get("commit", "unknown")),
        "config_hash": str(checkpoint.get("config_hash") or (config_hash(config) if config is not None else "")),
    }


def finite(value: Any) -> Any:
    """Floats that JSON can carry (inf/NaN become None), applied through dicts and lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def build_card(
    spec: ExportSpec,
    name: str,
    version: int,
    precision: str,
    training: dict[str, Any],
    metrics: dict[str, Any],
    parity: dict[str, Any],
    source: dict[str, Any],
    notes: list[str],
    inputs: list[TensorSpec] | None = None,
    outputs: list[TensorSpec] | None = None,
) -> ModelCard:
    """Assemble the card from the spec (tensors, scale, tiling) and what the export measured."""
    params = sum(p.numel() for p in spec.module.parameters())
    return ModelCard(
        name=name,
        task=spec.task,
        architecture=spec.architecture,
        inputs=inputs or [dataclasses.replace(t) for t in spec.inputs],
        outputs=outputs or [dataclasses.replace(t) for t in spec.outputs],
        version=version,
        precision=precision,
        parameters=int(params),
        scale=spec.scale,
        spatial_multiple=spec.spatial_multiple,
        tile_safe=spec.tile_safe,
        training=finite(training),
        metrics=finite(metrics),
        parity=finite(parity),
        source=source,
        notes=notes,
    )
