"""Predictors (named numpy in -> named numpy out) over torch and onnxruntime, so one evaluation measures both."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ganserve.errors import GanserveError
from training.export_spec import ExportSpec, Predictor

_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def ort_session(model: onnx.ModelProto | bytes, threads: int = 0) -> ort.InferenceSession:
    """A CPU onnxruntime session; a model ORT refuses is a clear error, not a crash."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise GanserveError(f"onnxruntime cannot load the exported model: {str(exc).splitlines()[0]}") from exc


def ort_predictor(session: ort.InferenceSession) -> Predictor:
    """Wrap a session; inputs are cast to the graph's own types (so fp16-I/O graphs take float32 arrays too)."""
    types = {i.name: _ORT_TYPES.get(i.type) for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v, dtype=types.get(k) or v.dtype) for k, v in inputs.items() if k in types}
        outs = session.run(names, feed)
        return {n: np.asarray(o, dtype=np.float32) if o.dtype == np.float16 else o for n, o in zip(names, outs)}

    return predict


def torch_predictor(spec: ExportSpec) -> Predictor:
    """Wrap the spec's module (eval mode, no grad); arguments in the spec's input order."""
    in_names = [t.name for t in spec.inputs]
    out_names = [t.name for t in spec.outputs]
    module = spec.module.eval()

    def predict(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in in_names if n not in inputs]
        if missing:
            raise GanserveError(f"missing input(s) {missing}")
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in in_names))
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(out_names, outs)}

    return predict
