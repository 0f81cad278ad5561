"""Which image-API RPC serves a model, from the roles of its card's tensors: the one rule the server, the pipeline
and the benchmarks all ask.

Roles: "image", "condition", "mask", "latent" on inputs; "image", "probabilities"/"logits" on outputs. The task
never decides: Transform serves every image-to-image model (SuperResolve, Translate, Derain and AgeFace are its
aliases), Classify an image-to-probabilities one, Generate a latent-to-image one; a model any of them would leave an
input of unfilled is served by ModelInfer only.
"""

from __future__ import annotations

from typing import Iterable

from ganserve.core.contract import ModelCard, TensorSpec

# What each RPC needs of a card, in the words error messages use.
NEEDS = {"Transform": "an image input and an image output",
         "Classify": "an image input and a probabilities or logits output",
         "Generate": "a latent input and an image output, and no image input"}

# The input roles each RPC fills (image, latent and mask: one tensor each; conditions: any number).
FILLS = {"Transform": ("image", "mask", "condition"), "Classify": ("image",), "Generate": ("latent", "condition")}


def rpc_by_outputs(card: ModelCard) -> str:
    """The RPC a card's roles call for, before asking whether it can fill every input ("" for none)."""
    takes_image = card.input_by_role("image") is not None
    if takes_image and card.output_by_role("probabilities", "logits") is not None:
        return "Classify"
    if card.output_by_role("image") is not None:
        if takes_image:
            return "Transform"
        if card.input_by_role("latent") is not None:
            return "Generate"
    return ""


def unfillable(card: ModelCard, rpc: str) -> list[TensorSpec]:
    """The inputs `rpc` would leave empty: roles it does not fill, and a second image, latent or mask."""
    seen: set[str] = set()
    left = []
    for t in card.inputs:
        if t.role not in FILLS[rpc] or (t.role != "condition" and t.role in seen):
            left.append(t)
        seen.add(t.role)
    return left


def rpc_for(card: ModelCard) -> str:
    """The image-API RPC that serves a model; "" when only ModelInfer can (including a model with an input the RPC
    its outputs call for cannot fill)."""
    rpc = rpc_by_outputs(card)
    return rpc if rpc and not unfillable(card, rpc) else ""


def unfilled(card: ModelCard, filled: Iterable[str]) -> list[TensorSpec]:
    """The card's inputs not among `filled` (names)."""
    names = set(filled)
    return [t for t in card.inputs if t.name not in names]


def roles_text(tensors: Iterable[TensorSpec]) -> str:
    """'lr (image), age (condition)', for messages."""
    return ", ".join(f"{t.name} ({t.role})" for t in tensors)
