"""Tiny ONNX models whose cards exercise every tensor role the image API reads (conditions, mask, latent, none).

Each computes something simple enough to predict the exact 8-bit answer of every request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from serving_models import _save, write_model

TONES = ["red", "green", "blue"]
STRENGTHS = ["low", "high"]
GEN_CLASSES = ["rising", "falling"]
GEN_PIXELS = np.array([[0.2, 0.4, 0.6, 0.8], [0.8, 0.6, 0.4, 0.2]], np.float32)  # one 2x2 picture per class


def _value(name: str, dims: list) -> object:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _const(array: np.ndarray, name: str):
    return numpy_helper.from_array(array, name)


def tint_model():
    """toned = 0.75 image + 0.25 one-hot(tone) per channel + 0.125 (strength == high): two named conditions."""
    nodes = [helper.make_node("Mul", ["image", "k_image"], ["scaled"]),
             helper.make_node("Reshape", ["tone", "shape_tone"], ["tone4"]),
             helper.make_node("Mul", ["tone4", "k_tone"], ["lift"]),
             helper.make_node("MatMul", ["strength", "w_strength"], ["s"]),
             helper.make_node("Reshape", ["s", "shape_s"], ["s4"]),
             helper.make_node("Add", ["scaled", "lift"], ["partial"]),
             helper.make_node("Add", ["partial", "s4"], ["toned"])]
    graph = helper.make_graph(
        nodes, "tint",
        [_value("image", ["N", 3, "H", "W"]), _value("tone", ["N", 3]), _value("strength", ["N", 2])],
        [_value("toned", ["N", 3, "H", "W"])],
        [_const(np.array(0.75, np.float32), "k_image"), _const(np.array(0.25, np.float32), "k_tone"),
         _const(np.array([[0.0], [0.125]], np.float32), "w_strength"),
         _const(np.array([-1, 3, 1, 1], np.int64), "shape_tone"), _const(np.array([-1, 1, 1, 1], np.int64), "shape_s")])
    return helper.make_model(graph)


def masked_model():
    """filled = image where the mask is 0, white where it is 1; the mask itself comes back first, as "attention"."""
    nodes = [helper.make_node("Sub", ["one", "mask"], ["keep"]),
             helper.make_node("Mul", ["image", "keep"], ["kept"]),
             helper.make_node("Add", ["kept", "mask"], ["filled"]),
             helper.make_node("Identity", ["mask"], ["attention"])]
    graph = helper.make_graph(nodes, "masked",
                              [_value("image", ["N", 3, "H", "W"]), _value("mask", ["N", 1, "H", "W"])],
                              [_value("attention", ["N", 1, "H", "W"]), _value("filled", ["N", 3, "H", "W"])],
                              [_const(np.array(1.0, np.float32), "one")])
    return helper.make_model(graph)


def embed_model():
    """An image in, its channel means out: no image output, so only ModelInfer serves it."""
    node = helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph([node], "embed", [_value("image", ["N", 3, "H", "W"])], [_value("means", ["N", 3])])
    return helper.make_model(graph)


def gen_model():
    """A 2x2 grey picture per class (GEN_PIXELS); the latent is read but adds 0."""
    nodes = [helper.make_node("MatMul", ["class", "pixels"], ["flat"]),
             helper.make_node("ReduceMean", ["z"], ["zm"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["zm", "zero"], ["nothing"]),
             helper.make_node("Add", ["flat", "nothing"], ["sum"]),
             helper.make_node("Reshape", ["sum", "shape"], ["picture"])]
    graph = helper.make_graph(nodes, "gen", [_value("z", ["N", 4]), _value("class", ["N", 2])],
                              [_value("picture", ["N", 1, 2, 2])],
                              [_const(GEN_PIXELS, "pixels"), _const(np.array(0.0, np.float32), "zero"),
                               _const(np.array([-1, 1, 2, 2], np.int64), "shape")])
    return helper.make_model(graph)


CARDS = {
    "tint": ModelCard(name="tint", task="tinting", architecture="pointwise",
                      inputs=[TensorSpec("image", [3, -1, -1], value_range=[0, 1]),
                              TensorSpec("tone", [3], role="condition", layout="NC", labels=TONES),
                              TensorSpec("strength", [2], role="condition", layout="NC", labels=STRENGTHS,
                                         default="low")],
                      outputs=[TensorSpec("toned", [3, -1, -1], value_range=[0, 1])]),
    "masked": ModelCard(name="masked", task="inpainting", architecture="pointwise",
                        inputs=[TensorSpec("image", [3, -1, -1], value_range=[0, 1]),
                                TensorSpec("mask", [1, -1, -1], role="mask", value_range=[0, 1])],
                        outputs=[TensorSpec("attention", [1, -1, -1], role="mask", value_range=[0, 1]),
                                 TensorSpec("filled", [3, -1, -1], value_range=[0, 1])]),
    "embed": ModelCard(name="embed", task="embedding", architecture="channel-mean",
                       inputs=[TensorSpec("image", [3, -1, -1], value_range=[0, 1])],
                       outputs=[TensorSpec("means", [3], role="tensor", layout="NC")]),
    "gen": ModelCard(name="gen", task="generation", architecture="lookup",
                     inputs=[TensorSpec("z", [4], role="latent", layout="NC"),
                             TensorSpec("class", [2], role="condition", layout="NC", labels=GEN_CLASSES)],
                     outputs=[TensorSpec("picture", [1, 2, 2], value_range=[0, 1])]),
}
BUILDERS = {"tint": tint_model, "masked": masked_model, "embed": embed_model, "gen": gen_model}


def make_role_repo(root: Path) -> Path:
    """A repository with the role models above beside sr2, digits and aging from serving_models."""
    repo = root / "repo"
    for name, build in BUILDERS.items():
        card, folder = CARDS[name], repo / name
        _save(build(), folder / "1" / MODEL_FILE)
        (folder / CARD_FILE).write_text(card.to_json())
        (folder / CONFIG_FILE).write_text(triton_config(card))
    for name in ("sr2", "digits", "aging"):
        write_model(repo, name)
    return repo
