"""Tiny ONNX models written with onnx.helper into a temp model repository (ganserve.core.contract layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, TensorSpec, triton_config

AGE_LABELS = ["young", "adult", "old"]
AGE_SHIFT = np.array([-0.5, 0.0, 0.5], np.float32)
CLASS_LABELS = ["bright", "mid", "dark"]


def _save(model: onnx.ModelProto, path: Path) -> None:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def sr_model() -> onnx.ModelProto:
    """x2 nearest-neighbour upscaler, dynamic N/H/W."""
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["lr", "", "scales"], ["hr"], mode="nearest")
    graph = helper.make_graph([node], "sr", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["N", 3, "H2", "W2"])], [scales])
    return helper.make_model(graph)


def classifier_model() -> onnx.ModelProto:
    """Grey 4x4 -> softmax over (bright, mid, dark): logits 10*mean, 5, 10*(1-mean)."""
    w = np.zeros((16, 3), np.float32)
    w[:, 0], w[:, 2] = 10 / 16, -10 / 16
    b = np.array([0, 5, 10], np.float32)
    nodes = [helper.make_node("Flatten", ["pixels"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph)


def aging_model() -> onnx.ModelProto:
    """image + (one-hot age . AGE_SHIFT) broadcast over pixels: a 2-input conditioned model."""
    nodes = [helper.make_node("MatMul", ["age", "shift"], ["s"]),
             helper.make_node("Reshape", ["s", "shape4"], ["s4"]),
             helper.make_node("Add", ["image", "s4"], ["aged"])]
    graph = helper.make_graph(
        nodes, "aging",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
         helper.make_tensor_value_info("age", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("aged", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [numpy_helper.from_array(AGE_SHIFT.reshape(3, 1), "shift"),
         numpy_helper.from_array(np.array([-1, 1, 1, 1], np.int64), "shape4")])
    return helper.make_model(graph)


CARDS = {
    "sr2": ModelCard(name="sr2", task="super_resolution", architecture="nearest-x2",
                     inputs=[TensorSpec("lr", [3, -1, -1], value_range=[-1, 1])],
                     outputs=[TensorSpec("hr", [3, -1, -1], value_range=[-1, 1])], scale=2, spatial_multiple=4),
    "digits": ModelCard(name="digits", task="classification", architecture="linear-softmax",
                        inputs=[TensorSpec("pixels", [1, 4, 4], value_range=[0, 1])],
                        outputs=[TensorSpec("probs", [3], role="probabilities", layout="NC", labels=CLASS_LABELS)]),
    "aging": ModelCard(name="aging", task="face_aging", architecture="shift", tile_safe=False,
                       inputs=[TensorSpec("image", [3, -1, -1], value_range=[-1, 1]),
                               TensorSpec("age", [3], role="condition", layout="NC", labels=AGE_LABELS)],
                       outputs=[TensorSpec("aged", [3, -1, -1], value_range=[-1, 1])]),
}
BUILDERS = {"sr2": sr_model, "digits": classifier_model, "aging": aging_model}


def write_model(repo: Path, name: str, version: int = 1) -> Path:
    """One model folder per ganserve.core.contract: card, config.pbtxt, <version>/model.onnx (+ reference for sr2)."""
    card = CARDS[name]
    folder = repo / name
    _save(BUILDERS[name](), folder / str(version) / MODEL_FILE)
    (folder / CARD_FILE).write_text(card.to_json())
    (folder / CONFIG_FILE).write_text(triton_config(card))
    if name == "sr2":
        x = np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
        np.savez(folder / str(version) / REFERENCE_FILE, **{"in:lr": x, "out:hr": x.repeat(2, 2).repeat(2, 3)})
    return folder


def make_repo(root: Path, broken: bool = True) -> Path:
    """A repository with sr2, digits, aging and (optionally) 'broken', whose model.onnx is garbage."""
    repo = root / "repo"
    for name in BUILDERS:
        write_model(repo, name)
    if broken:
        folder = write_model(repo, "sr2")  # reuse the card, then rename and corrupt
        target = repo / "broken"
        folder.rename(target)
        write_model(repo, "sr2")
        card = ModelCard.from_dict({**CARDS["sr2"].to_dict(), "name": "broken"})
        (target / CARD_FILE).write_text(card.to_json())
        (target / CONFIG_FILE).write_text(triton_config(card))
        (target / "1" / MODEL_FILE).write_bytes(b"this is not an onnx model")
    return repo
