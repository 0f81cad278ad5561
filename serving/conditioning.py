"""Tensors the image API fills besides the image: named conditions (e.g. an age group), a latent code.

A condition is an input whose card role is "condition"; a request names it by the tensor's name and picks one of
its labels (or an index as text). The card's ``default`` fills a condition a request leaves out.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.serving import status


def condition_choices(spec: TensorSpec) -> list[str]:
    """The choices of a condition input: its labels, else the indices of its one-hot axis (empty if unknown)."""
    if spec.labels:
        return list(spec.labels)
    classes = spec.shape[0] if spec.shape and spec.shape[0] > 0 else 0
    return [str(i) for i in range(classes)]


def condition_index(spec: TensorSpec, choice: str) -> int | None:
    """Index of a label (case-insensitive) or of a number given as text; None when it is neither."""
    labels = spec.labels or []
    choice = choice.strip()
    lowered = [label.lower() for label in labels]
    if choice.lower() in lowered:
        return lowered.index(choice.lower())
    if choice.isdigit() and (not labels or int(choice) < len(labels)):
        return int(choice)
    return None


def _one_of(spec: TensorSpec) -> str:
    """'one of: a, b, c' for messages (or 'an index' when the card names no choices)."""
    return f"one of: {', '.join(condition_choices(spec)) or 'an index'}"


def resolve_conditions(card: ModelCard, given: Mapping[str, str], what: str = "condition") -> dict[str, int]:
    """Condition input name -> chosen index, from a request's conditions and the card's defaults.

    INVALID_ARGUMENT for a name the model has no condition for, a required condition left out, or a choice that
    is not one of its labels; ``what`` names the choice in messages (e.g. "target age" for AgeFace).
    """
    specs = {spec.name: spec for spec in card.conditions()}
    unknown = sorted(set(given) - set(specs))
    if unknown:
        accepted = f"its conditions: {', '.join(specs)}" if specs else "it takes no conditions"
        raise status.invalid(f"model {card.name!r} has no condition {', '.join(map(repr, unknown))} ({accepted})")
    chosen: dict[str, int] = {}
    for name, spec in specs.items():
        choice = (given.get(name) or "").strip() or (spec.default or "")
        if not choice:
            raise status.invalid(f"model {card.name!r} needs a {what} for {name!r} ({_one_of(spec)})")
        index = condition_index(spec, choice)
        if index is None:
            raise status.invalid(f"model {card.name!r}: unknown {what} {choice!r} for {name!r} ({_one_of(spec)})")
        chosen[name] = index
    return chosen


def single_condition(card: ModelCard, value: str, field: str) -> dict[str, str]:
    """An older request's one condition field (AgeFace's target_age, Generate's condition) as a conditions map:
    it fills the model's only condition input; empty means none given."""
    if not value.strip():
        return {}
    specs = card.conditions()
    if not specs:
        raise status.invalid(f"model {card.name!r} has no condition input, so {field} {value!r} cannot be applied")
    if len(specs) > 1:
        names = ", ".join(spec.name for spec in specs)
        raise status.invalid(f"model {card.name!r} has {len(specs)} condition inputs ({names}), so {field} {value!r} "
                             "cannot say which it sets; name them in conditions (Transform)")
    return {specs[0].name: value}


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
