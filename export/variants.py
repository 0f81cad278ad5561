"""Faster precisions of a checked fp32 graph: fp16 (onnx's own API) and static int8, by onnxruntime's QDQ quantizer or
by NNCF's post-training quantization (docs/int8.md compares them per model)."""

from __future__ import annotations

import logging
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tqdm import tqdm

from ganserve.core.errors import GanserveError, described, first_line

# The int8 quantizers the export knows, and what each writes (the card's note).
INT8_METHODS = {
    "qdq": "static QDQ by onnxruntime.quantization, per-channel int8 weights, uint8 activations, MinMax calibration",
    "nncf": "NNCF post-training quantization (ONNX backend, its default preset), calibrated on the same batches",
}

NO_CALIBRATION = "int8 needs calibration data, and this model's ExportSpec declares none"

_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16
_FP16_MAX = float(np.finfo(np.float16).max)


def _opset(model: onnx.ModelProto, domain: str = "") -> int:
    return next((o.version for o in model.opset_import if o.domain in (domain, "ai.onnx" if domain == "" else domain)), 1)


def _accepts_half(op_type: str, domain: str, opset: int, index: int) -> bool:
    """Whether input `index` of this op may be float16 (Resize's scales, for one, must stay float32)."""
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return True
    if not schema.inputs:
        return True
    formal = schema.inputs[min(index, len(schema.inputs) - 1)]
    allowed = next((c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == formal.type_str), [formal.type_str])
    return "tensor(float16)" in allowed


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor in the graph, from strict shape inference of the fp32 model."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    names = {v.name for v in [*g.input, *g.output, *g.value_info] if v.type.tensor_type.elem_type == _FLOAT}
    return names | {i.name for i in g.initializer if i.data_type == _FLOAT}


def _half_tensor(t: TensorProto) -> TensorProto:
    arr = numpy_helper.to_array(t)
    if np.any(np.abs(arr[np.isfinite(arr)]) > _FP16_MAX):
        raise GanserveError(f"fp16: constant {t.name!r} holds values beyond the float16 range")
    return numpy_helper.from_array(arr.astype(np.float16), t.name)


def to_fp16(model: onnx.ModelProto, keep_io_fp32: bool = True) -> onnx.ModelProto:
    """Weights and compute in float16; with keep_io_fp32 the graph still takes and returns float32 (Cast at the edges)."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise GanserveError("fp16: graphs with control flow (If/Loop/Scan) are not converted")
    floats = _float_tensors(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    opset = _opset(out)
    init_names = {i.name for i in g.initializer}
    fp32_copies: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    # Inputs: cast float32 -> float16 at the edge, or make the input itself float16.
    renames: dict[str, str] = {}
    for inp in g.input:
        if inp.name in floats and inp.name not in init_names:
            if keep_io_fp32:
                renames[inp.name] = inp.name + "__fp16"
                new_nodes.append(helper.make_node("Cast", [inp.name], [renames[inp.name]], to=_HALF, name=inp.name + "__to_fp16"))
            else:
                inp.type.tensor_type.elem_type = _HALF

    for node in g.node:
        for i, name in enumerate(node.input):
            name = renames.get(name, name)
            node.input[i] = name
            if name not in floats and name.removesuffix("__fp16") not in floats:
                continue
            if _accepts_half(node.op_type, node.domain, opset, i):
                continue
            if name in init_names:  # keep an exact float32 copy for slots that need float32
                if name not in fp32_copies:
                    fp32_copies[name] = name + "__fp32"
                node.input[i] = fp32_copies[name]
            else:
                cast_out = f"{name}__fp32_for_{node.name or node.op_type}_{i}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=_FLOAT, name=cast_out))
                node.input[i] = cast_out
        for attr in node.attribute:
            if attr.name in ("to", "dtype") and attr.type == onnx.AttributeProto.INT and attr.i == _FLOAT:
                attr.i = _HALF
            elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == _FLOAT:
                attr.t.CopyFrom(_half_tensor(attr.t))
        new_nodes.append(node)

    converted = []
    for init in g.initializer:
        if init.data_type != _FLOAT:
            converted.append(init)
            continue
        if init.name in fp32_copies:
            copy = TensorProto()
            copy.CopyFrom(init)
            copy.name = fp32_copies[init.name]
            converted.append(copy)
        converted.append(_half_tensor(init))

    # Outputs: compute in float16, cast back at the edge (or return float16).
    for outp in g.output:
        if outp.name not in floats:
            continue
        if keep_io_fp32:
            inner = outp.name + "__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == outp.name else o for o in node.output]
                node.input[:] = [inner if x == outp.name else x for x in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [outp.name], to=_FLOAT, name=outp.name + "__to_fp32"))
        else:
            outp.type.tensor_type.elem_type = _HALF

    del g.node[:]
    g.node.extend(_topological(new_nodes, {i.name for i in g.input} | {i.name for i in converted}))
    del g.initializer[:]
    g.initializer.extend(converted)
    del g.value_info[:]
    try:
        out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
        onnx.checker.check_model(out)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GanserveError(f"fp16 conversion produced an invalid graph: {first_line(exc)}") from exc
    return out


def _topological(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """Order nodes so each runs after its inputs exist (the inserted Casts sit out of order until now); Kahn's method."""
    producer = {out: i for i, n in enumerate(nodes) for out in n.output}
    waiting = [{producer[x] for x in n.input if x not in available and x and x in producer} for n in nodes]
    for i, n in enumerate(nodes):
        dangling = [x for x in n.input if x and x not in available and x not in producer]
        if dangling:
            raise GanserveError(f"fp16: node {n.name or n.op_type} reads {dangling[0]!r}, which nothing produces")
    users: dict[int, list[int]] = {}
    for i, deps in enumerate(waiting):
        for d in deps:
            users.setdefault(d, []).append(i)
    queue = [i for i, deps in enumerate(waiting) if not deps]
    order = []
    while queue:
        i = queue.pop(0)
        order.append(i)
        for u in users.get(i, []):
            waiting[u].discard(i)
            if not waiting[u]:
                queue.append(u)
    if len(order) != len(nodes):
        raise GanserveError("fp16: the converted graph has a cycle")
    return [nodes[i] for i in order]


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol over the spec's calibration batches, with a progress bar."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]], input_types: dict[str, np.dtype], progress: bool) -> None:
        self._it = iter(batches)
        self._types = input_types
        self._bar = tqdm(desc="int8 calibration", unit="batch", disable=not progress, leave=False)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        if batch is None:
            self._bar.close()
            return None
        self.count += 1
        self._bar.update(1)
        return {k: np.ascontiguousarray(v, dtype=self._types.get(k, np.float32)) for k, v in batch.items() if k in self._types}


class _Keep(logging.Handler):
    """Collects log messages instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _quantizer_log(progress: bool) -> Iterator[None]:
    """onnxruntime's quantizer warns through the root logger (a bare "WARNING:root:" line each): keep them off
    stderr, and repeat them once each as export progress lines when progress is on."""
    root, keep = logging.getLogger(), _Keep()
    saved = root.handlers[:]
    root.handlers[:] = [keep]
    try:
        yield
    finally:
        root.handlers[:] = saved
        for message in dict.fromkeys(keep.messages) if progress else ():
            print(f"export: int8 quantizer: {message}", file=sys.stderr, flush=True)


def _input_types(model: onnx.ModelProto) -> dict[str, np.dtype]:
    init_names = {i.name for i in model.graph.initializer}
    return {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type)
            for i in model.graph.input if i.name not in init_names}


def to_int8(
    model: onnx.ModelProto,
    calibration: Callable[[], Iterable[dict[str, np.ndarray]]] | None,
    progress: bool = False,
    method: str = "qdq",
) -> onnx.ModelProto:
    """Static int8 of the checked fp32 graph, calibrated on the spec's calibration batches, by ``method``
    (INT8_METHODS)."""
    if method not in INT8_METHODS:
        raise GanserveError(f"unknown int8 method {method!r}; use {', '.join(INT8_METHODS)}")
    if calibration is None:
        raise GanserveError(NO_CALIBRATION)
    if method == "nncf":
        return _nncf_int8(model, calibration, progress)
    return _qdq_int8(model, calibration, progress)


def _qdq_int8(model: onnx.ModelProto, calibration: Callable[[], Iterable[dict[str, np.ndarray]]],
              progress: bool) -> onnx.ModelProto:
    """onnxruntime.quantization's static QDQ (per-channel int8 weights, uint8 activations, MinMax)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reader = _Calibration(calibration(), _input_types(model), progress)
    with tempfile.TemporaryDirectory(prefix="ganserve-int8-") as tmp, _quantizer_log(progress):
        src, pre, dst = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing only helps; quantize the checked graph itself when it fails
            pre = src
        try:
            quantize_static(
                str(pre), str(dst), reader,
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:  # quantize_static raises assorted types for unsupported graphs
            raise GanserveError(f"int8 quantization failed: {described(exc)}") from exc
        if reader.count == 0:
            raise GanserveError("int8 calibration produced no batches")
        quantized = onnx.load(dst)
    return quantized


def _nncf_int8(model: onnx.ModelProto, calibration: Callable[[], Iterable[dict[str, np.ndarray]]],
               progress: bool) -> onnx.ModelProto:
    """NNCF's post-training quantization of the ONNX graph, on every calibration batch."""
    try:
        import nncf
    except ImportError as exc:
        raise GanserveError("int8 method nncf needs NNCF, which `make setup` installs (the train extra)") from exc
    types = _input_types(model)
    batches = [{k: np.ascontiguousarray(v, dtype=types.get(k, np.float32)) for k, v in b.items() if k in types}
               for b in tqdm(calibration(), desc="int8 calibration (nncf)", unit="batch", disable=not progress,
                             leave=False)]
    if not batches:
        raise GanserveError("int8 calibration produced no batches")
    nncf.set_log_level(logging.WARNING if progress else logging.ERROR)
    with _quantizer_log(progress):
        try:
            return nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
        except Exception as exc:  # NNCF raises its own types for graphs it cannot handle
            raise GanserveError(f"int8 quantization (nncf) failed: {described(exc)}") from exc
