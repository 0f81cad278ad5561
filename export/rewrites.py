"""Exact rewrites of an exported graph into the form the runtimes run well; each computes the same function.

``prelu_slopes``: torch exports ``nn.PReLU(C)``'s slope as an initializer of shape (C, 1, 1). Against an NCHW input
that broadcasts exactly like (1, C, 1, 1), but OpenVINO fuses only the 4-d form into the convolution before it: on a
10-convolution stack with (C, 1, 1) slopes its int8 rate fell from 1,939 to 143 GOP/s, and reshaping restored it
(14.4 instead of 173.0 ms; docs/fast-cpu.md). The reshape touches only the slope's shape, never a value, so the
rewritten graph's outputs equal the original's bit for bit (tests/export/test_rewrites.py).
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper


def prelu_slopes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with every PRelu slope initializer of shape (C, 1, 1) reshaped to (1, C, 1, 1) when the PRelu's
    input is 4-d (NCHW); returns (model, how many slopes changed). A slope shared with another node is left alone."""
    if not any(node.op_type == "PRelu" for node in model.graph.node):
        return model, 0  # most networks: no shape-inference pass for nothing
    inits = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    ranks = _ranks(model)
    changed = 0
    for node in model.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2:
            continue
        slope = inits.get(node.input[1])
        if slope is None or uses.get(slope.name, 0) != 1 or ranks.get(node.input[0]) != 4:
            continue
        dims = list(slope.dims)
        if len(dims) != 3 or dims[1:] != [1, 1]:
            continue
        array = numpy_helper.to_array(slope).reshape(1, dims[0], 1, 1)
        slope.CopyFrom(numpy_helper.from_array(array, slope.name))
        changed += 1
    return model, changed


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of every value shape inference can tell (graph inputs included)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            ranks[value.name] = len(tensor.shape.dim)
    return ranks
