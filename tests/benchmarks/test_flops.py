"""FLOPs counted from the ONNX graph equal the closed form, also where shapes are only known at run time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ganserve.benchmarks.flops import count_flops


def _conv_model(computed_pads: bool) -> onnx.ModelProto:
    """x -> Pad(1 each side) -> Conv 3x3 (3 -> 8 channels). With computed_pads the pads come from Shape ops, so
    static shape inference cannot know the Conv's input size (as in reflection-padded translation networks)."""
    w = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    inits = [w]
    if computed_pads:
        nodes = [helper.make_node("Shape", ["x"], ["shape"]),
                 helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
                 helper.make_node("Div", ["n", "n"], ["one"]),  # 1, but only known when run
                 helper.make_node("Mul", ["ones8", "one"], ["pads"]),
                 helper.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect")]
        inits += [numpy_helper.from_array(np.array(0, np.int64), "zero"),
                  numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "ones8")]
    else:
        nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"], mode="reflect")]
        inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"))
    nodes.append(helper.make_node("Conv", ["xp", "w"], ["y"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, "H", "W"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime flavour reads
    return model


def test_conv_flops_with_static_and_run_time_shapes(tmp_path: Path) -> None:
    want = 2 * (2 * 8 * 20 * 24) * (3 * 3 * 3)  # 2 x output elements x multiply-adds per element
    for computed in (False, True):
        path = tmp_path / f"m{int(computed)}.onnx"
        onnx.save(_conv_model(computed), path)
        assert count_flops(path, {"x": [2, 3, 20, 24]}) == want
