"""FLOPs of one forward pass, counted from the ONNX graph at a concrete input shape (multiply-add = 2 FLOPs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import shape_inference


def _shape(value_info: dict[str, list[int]], name: str) -> list[int] | None:
    return value_info.get(name)


def _run_shapes(model: onnx.ModelProto, input_shapes: dict[str, list[int]], names: set[str]) -> dict[str, list[int]]:
    """Actual shapes of `names` from one ONNX Runtime run on zeros (every name exposed as a graph output)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    known = {o.name for o in probe.graph.output}
    for name in sorted(names - known):
        probe.graph.output.add(name=name)
    dtypes = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in probe.graph.input}
    feeds = {name: np.zeros(shape, dtype=dtypes[name]) for name, shape in input_shapes.items()}
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    wanted = sorted(names)
    return {n: list(v.shape) for n, v in zip(wanted, session.run(wanted, feeds))}


def count_flops(model_path: str | Path, input_shapes: dict[str, list[int]]) -> int:
    """Conv, ConvTranspose, MatMul and Gemm FLOPs for the given concrete input shapes (others are negligible here)."""
    model = onnx.load(str(model_path))
    graph = model.graph
    for inp in graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[inp.name]):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    unknown = [n for n in inferred.graph.node if n.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm")
               and any(min(shapes.get(t) or [-1]) < 0 for t in (n.input[0], n.output[0]))]
    if unknown:  # shapes computed at run time (e.g. reflection padding built from Shape ops): run it once
        shapes.update(_run_shapes(model, input_shapes, {t for n in unknown for t in (n.input[0], n.output[0])}))
    total = 0
    for node in inferred.graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            w, y = _shape(shapes, node.input[1]), _shape(shapes, node.output[0])
            x = _shape(shapes, node.input[0])
            if not w or not y or min(y) < 0:
                continue
            if node.op_type == "Conv":
                # each output element: (C_in/groups) * kH * kW multiply-adds
                total += 2 * int(np.prod(y)) * int(np.prod(w[1:]))
            elif x and min(x) > 0:
                total += 2 * int(np.prod(x)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a, y = _shape(shapes, node.input[0]), _shape(shapes, node.output[0])
            if not a or not y or min(a) < 0 or min(y) < 0:
                continue
            k = a[-1] if not (node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute)) else a[-2]
            total += 2 * int(np.prod(y)) * int(k)
    return total
