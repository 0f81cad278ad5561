"""Checkpoint files: one atomic torch zip holding config, weights, optimizer state, step, metrics and commit."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ganserve.core.errors import CheckpointError, first_line

FORMAT = "ganserve-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format", "format_version", "model", "config", "state", "step")


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the source tree (``unknown`` outside git), recorded so a checkpoint names its code."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now_iso() -> str:
    """The current UTC time as ISO 8601, for the ``created`` field."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, then rename); fill format fields."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    payload.setdefault("format", FORMAT)
    payload.setdefault("format_version", FORMAT_VERSION)
    payload.setdefault("created", now_iso())
    payload.setdefault("commit", git_commit())
    payload.setdefault("metrics", {})
    payload.setdefault("optim", {})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint``; a one-line CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # foreign pickles warn before they fail; the error below says it
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated zips and foreign pickles
        raise CheckpointError(f"{path}: truncated, corrupt or foreign file ({first_line(exc, 160)})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganserve checkpoint (no format={FORMAT!r} marker)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {payload.get('format_version')!r} not supported (want {FORMAT_VERSION})"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if not isinstance(payload["state"], dict) or not isinstance(payload["config"], dict):
        raise CheckpointError(f"{path}: checkpoint 'state' and 'config' must be mappings")
    return payload


def build_from_checkpoint(path: str | Path, overrides: dict[str, Any] | None = None) -> Any:
    """Rebuild the registered application a checkpoint names, load its weights, and put it in eval mode.

    ``overrides`` (config key -> value, strings allowed) replace stored config values first, e.g. which of a
    two-generator model's directions to export; one that changes the networks fails on the weights below. A config
    written before networks were named is migrated on the way (``training/migrate.py``)."""
    from ganserve.training import registry
    from ganserve.training.registry import merge_config

    payload = load_checkpoint(path)
    app = registry.build(payload["model"], merge_config(payload["model"], payload["config"], overrides))
    try:
        app.load_weights(payload["state"], payload.get("removed", ()))
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit model {payload['model']!r} ({first_line(exc)})") from exc
    app.train_info = {
        "step": int(payload["step"]),
        "metrics": payload.get("metrics", {}),
        "commit": payload.get("commit", "unknown"),
        "created": payload.get("created", ""),
        "checkpoint": str(path),
    }
    app.eval()
    return app
