"""Torch -> ONNX for any ExportSpec: named tensors, dynamic axes from the TensorSpecs, eval mode enforced."""

from __future__ import annotations

import io
import warnings

import onnx
import torch

from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError, described, first_line
from ganserve.export.defaults import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from ganserve.export.module_rewrites import transposed_as_shuffle
from ganserve.export.rewrites import prelu_slopes
from ganserve.core.export_spec import ExportSpec

_AXIS_NAMES = {"N": "batch", "H": "height", "W": "width", "D": "depth", "T": "time"}
# Ops whose training-mode form must never reach a served graph.
_TRAINING_OPS = {"Dropout", "BatchNormalization"}


def dynamic_axes(tensors: list[TensorSpec], prefix: str = "") -> dict[str, dict[int, str]]:
    """Axis names for torch.onnx.export: batch is always dynamic; any TensorSpec dim of -1 is too."""
    axes: dict[str, dict[int, str]] = {}
    for t in tensors:
        named = {0: "batch"}
        for i, dim in enumerate(t.shape, start=1):
            if dim == -1:
                letter = t.layout[i] if len(t.layout) == len(t.shape) + 1 else ""
                named[i] = prefix + _AXIS_NAMES.get(letter, f"{t.name}_dim{i}")
        axes[t.name] = named
    return axes


def check_spec(spec: ExportSpec) -> None:
    """Refuse an ExportSpec whose declared tensors cannot match its example or its dynamic_spatial flag."""
    if len(spec.example_inputs) != len(spec.inputs):
        raise GanserveError(f"{spec.architecture}: {len(spec.example_inputs)} example inputs for {len(spec.inputs)} declared inputs")
    for t, x in zip(spec.inputs, spec.example_inputs):
        if x.dim() != len(t.shape) + 1 or any(d not in (-1, s) for d, s in zip(t.shape, x.shape[1:])):
            raise GanserveError(f"{spec.architecture}: example input {t.name!r} has shape {tuple(x.shape)}, declared [N, {t.shape}]")
    has_dynamic = any(-1 in t.shape for t in spec.inputs)
    if spec.dynamic_spatial and not has_dynamic:
        raise GanserveError(f"{spec.architecture}: dynamic_spatial is set but no input declares a -1 (dynamic) axis")
    if not spec.dynamic_spatial and has_dynamic:
        raise GanserveError(f"{spec.architecture}: inputs declare dynamic axes but dynamic_spatial is False")


def set_eval(module: torch.nn.Module) -> None:
    """Put every submodule in eval mode and prove it: no dropout or batch statistics at inference."""
    module.eval()
    still = [name or "<root>" for name, m in module.named_modules() if m.training]
    if still:
        raise GanserveError(f"modules still in training mode after eval(): {', '.join(still[:5])}")


def to_onnx(spec: ExportSpec, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace the spec's module with the TorchScript exporter (about 1 s, dynamic axes honoured) and check it."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise GanserveError(f"opset {opset} not supported; use {MIN_OPSET}..{MAX_OPSET}")
    check_spec(spec)
    set_eval(spec.module)
    buf = io.BytesIO()
    axes = {**dynamic_axes(spec.inputs), **dynamic_axes(spec.outputs, prefix="out_")}
    # exact: export/module_rewrites.py; parity against spec.module itself (as trained) checks it on every export
    module, _ = transposed_as_shuffle(spec.module)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(spec.example_inputs),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[t.name for t in spec.inputs],
                output_names=[t.name for t in spec.outputs],
                dynamic_axes=axes,
                do_constant_folding=True,
                training=torch.onnx.TrainingMode.EVAL,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this module cannot be exported"
        raise GanserveError(f"{spec.architecture}: ONNX export failed: {described(exc)}") from exc
    model, _ = prelu_slopes(onnx.load_from_string(buf.getvalue()))  # exact: docs/fast-cpu.md, export/rewrites.py
    return check_graph(model, spec)


def check_graph(model: onnx.ModelProto, spec: ExportSpec | None = None) -> onnx.ModelProto:
    """onnx.checker plus strict shape inference; no training-mode ops; I/O names match the spec."""
    try:
        onnx.checker.check_model(model, full_check=False)
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise GanserveError(f"exported graph is invalid: {first_line(exc)}") from exc
    for node in model.graph.node:
        if node.op_type in _TRAINING_OPS:
            training = next((a.i for a in node.attribute if a.name == "training_mode"), 0)
            if node.op_type == "Dropout" or training:
                raise GanserveError(f"exported graph contains a training-mode {node.op_type} ({node.name})")
    if spec is not None:
        got_in = [i.name for i in model.graph.input if i.name not in {x.name for x in model.graph.initializer}]
        got_out = [o.name for o in model.graph.output]
        if got_in != [t.name for t in spec.inputs] or got_out != [t.name for t in spec.outputs]:
            raise GanserveError(f"exported graph has inputs {got_in} and outputs {got_out}; the spec declares others")
    return model
