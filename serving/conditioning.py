"""Tensors the image API fills besides the image: a condition (e.g. age group) and a latent code."""

from __future__ import annotations

import numpy as np

from ganserve.core.contract import TensorSpec
from ganserve.serving import status


def condition_index(spec: TensorSpec, choice: str, what: str = "condition") -> int:
    """Index of a condition label (case-insensitive) or a number given as text; INVALID_ARGUMENT otherwise."""
    labels = spec.labels or []
    choice = choice.strip()
    if not choice:
        raise status.invalid(f"a {what} is required (one of: {', '.join(labels) or 'an index'})")
    lowered = [label.lower() for label in labels]
    if choice.lower() in lowered:
        return lowered.index(choice.lower())
    if choice.isdigit() and (not labels or int(choice) < len(labels)):
        return int(choice)
    raise status.invalid(f"unknown {what} {choice!r} (one of: {', '.join(labels)})")


def condition_tensor(spec: TensorSpec, index: int, height: int, width: int) -> np.ndarray:
    """One row of the condition input: an index (integer dtype), a one-hot vector, or one-hot planes (H, W)."""
    dtype = np.dtype(spec.numpy_dtype)
    if np.issubdtype(dtype, np.integer):
        return np.full((1, *[1 for _ in spec.shape]), index, dtype=dtype)
    classes = spec.shape[0] if spec.shape and spec.shape[0] > 0 else len(spec.labels or [])
    if classes <= 0 or index >= classes:
        raise status.invalid(f"condition {spec.name!r}: index {index} does not fit {classes} choices")
    if len(spec.shape) == 1:
        row = np.zeros((1, classes), dtype=dtype)
        row[0, index] = 1
        return row
    if len(spec.shape) == 3:
        h = spec.shape[1] if spec.shape[1] > 0 else height
        w = spec.shape[2] if spec.shape[2] > 0 else width
        planes = np.zeros((1, classes, h, w), dtype=dtype)
        planes[0, index] = 1
        return planes
    raise status.invalid(f"condition {spec.name!r}: shape {spec.shape} is not one the image API can fill")


def latent_tensor(spec: TensorSpec, seed: int) -> np.ndarray:
    """A standard-normal latent row for generation, reproducible from the seed."""
    if any(d <= 0 for d in spec.shape):
        raise status.invalid(f"latent {spec.name!r}: shape {spec.shape} must be fixed for generation")
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, *spec.shape)).astype(spec.numpy_dtype)
