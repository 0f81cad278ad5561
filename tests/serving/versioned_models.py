"""A model with several versions whose answers tell them apart: version k computes nearest-x2(lr) * FACTORS[k],
written the way `ganserve export` writes a version (a temp folder, then one rename), with a reference set that
matches (or, to make a version that fails the reference check, one that does not)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, triton_config
from serving_models import CARDS, _save

FACTORS = {1: 1.0, 2: 0.5, 3: 0.25, 4: 0.125}


def scaled_model(factor: float):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    k = numpy_helper.from_array(np.array(factor, np.float32), "k")
    nodes = [helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="nearest"),
             helper.make_node("Mul", ["up", "k"], ["hr"])]
    graph = helper.make_graph(nodes, "scaled", [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("hr", TensorProto.FLOAT, ["N", 3, "H2", "W2"])], [scales, k])
    return helper.make_model(graph)


def expected(x: np.ndarray, version: int) -> np.ndarray:
    return x.repeat(2, 2).repeat(2, 3) * np.float32(FACTORS[version])


def write_version(repo: Path, name: str, version: int, broken: bool = False, wrong_reference: bool = False) -> Path:
    """One version folder, atomically: model.onnx (garbage when `broken`) and a reference set (one the model does not
    reproduce when `wrong_reference`). The model folder's card and config are written first if missing."""
    folder = repo / name
    if not (folder / CARD_FILE).exists():
        card = ModelCard.from_dict({**CARDS["sr2"].to_dict(), "name": name})
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CARD_FILE).write_text(card.to_json())
        (folder / CONFIG_FILE).write_text(triton_config(card))
    tmp = folder / f".tmp-{version}"
    if broken:
        tmp.mkdir(parents=True)
        (tmp / MODEL_FILE).write_bytes(b"not an onnx model")
    else:
        _save(scaled_model(FACTORS[version]), tmp / MODEL_FILE)
        x = np.linspace(-1, 1, 2 * 3 * 8 * 8, dtype=np.float32).reshape(2, 3, 8, 8)
        out = expected(x, 1 if wrong_reference and version != 1 else version)
        np.savez(tmp / REFERENCE_FILE, **{"in:lr": x, "out:hr": out})
    os.rename(tmp, folder / str(version))
    return folder / str(version)
