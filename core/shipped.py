"""The shipped-entry layout (models/<name>/), read without torch by every layer that takes an entry.

An entry holds ``checkpoint.pt`` (weights and config, optimizer state stripped), ``training_record.json`` (how the
checkpoint was trained and what it scored on held-out data: command, config, seed, commit, training summary,
held-out metrics next to their baselines, the issue's target), ``metrics.jsonl`` (the training log) and the model
exported beside them in the model-repository layout (``config.pbtxt``, ``model_card.json``, ``1/model.onnx``), so
``models/`` itself is a model repository. ``training_record.json`` is about the checkpoint; ``model_card.json`` is
about the exported ONNX model (ganserve.core.contract) and is what the server reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ganserve.core.errors import GanserveError

SHIPPED_ENV = "GANSERVE_SHIPPED"  # names the shipped models' folder (commands also take --shipped / --models-dir)
TRAINING_RECORD = "training_record.json"
LEGACY_RECORD = "card.json"  # what entries written before the rename call it; read, never written
SHIP_CHECKPOINT = "checkpoint.pt"
# Variants every shipped entry (and `ganserve demo`'s export) writes beside model.onnx when they pass the quality
# rule: int8 needs a file; bf16 needs none (the server asks OpenVINO for it); fp16 is left out, as no CPU provider
# here runs it faster than fp32 (docs/int8.md).
SHIPPED_VARIANTS = ("int8",)


def record_path(entry: str | Path) -> Path:
    """The training record of an entry folder (or the record file itself), under its current or legacy name."""
    path = Path(entry)
    if path.name in (TRAINING_RECORD, LEGACY_RECORD):
        return path
    legacy = path / LEGACY_RECORD
    return legacy if legacy.is_file() and not (path / TRAINING_RECORD).is_file() else path / TRAINING_RECORD


def read_entry(entry: str | Path) -> dict[str, Any]:
    """The training record of a shipped entry; a one-line error for anything else."""
    card_path = record_path(entry)
    if not card_path.is_file():
        raise GanserveError(f"{entry}: not a shipped model entry (no {TRAINING_RECORD})")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise GanserveError(f"{card_path}: unreadable training record ({exc})") from exc
    for key in ("model", "file", "config", "held_out", "quality_key"):
        if key not in card:
            raise GanserveError(f"{card_path}: training record lacks {key!r}")
    return card


def entry_checkpoint(entry: str | Path) -> Path:
    """The checkpoint file a shipped entry names."""
    card = read_entry(entry)
    return record_path(entry).parent / card["file"]


def shipped_dir() -> Path:
    """Where the shipped models are: $GANSERVE_SHIPPED, else models/ in the current folder (the checkout's root,
    where make, the docs and the tests run commands). They are not in the wheel."""
    return Path(os.environ.get(SHIPPED_ENV) or "models").absolute()


def from_shipped(path: str | Path) -> Path:
    """A path as given if it exists from here, else one written as models/... (a shipped file, as configs and
    records name them) found under shipped_dir()."""
    path = Path(path)
    if path.is_absolute() or path.exists() or not path.parts or path.parts[0] != "models":
        return path
    return shipped_dir().joinpath(*path.parts[1:])


def shipped_entries(models_dir: str | Path | None = None) -> list[Path]:
    """Entry folders under models/ (those with a training record), sorted by name."""
    root = Path(models_dir) if models_dir is not None else shipped_dir()
    folders = {p.parent for name in (TRAINING_RECORD, LEGACY_RECORD) for p in root.glob(f"*/{name}")}
    return sorted(p for p in folders if not p.name.startswith("."))
