"""Predictors (named numpy in -> named numpy out) over torch and onnxruntime, so one evaluation measures both."""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import torch

from ganserve.core.errors import GanserveError, first_line
from ganserve.core.export_spec import ExportSpec, Predictor
from ganserve.core.onnxruntime_facts import CPU, OPENVINO, numpy_type, openvino_options


def provider_options(provider: str) -> dict[str, str]:
    """The options the export gives a provider: OpenVINO on the CPU with the explicit fp32 inference hint."""
    return openvino_options("fp32") if provider == OPENVINO else {}


def raw_session(model: onnx.ModelProto | bytes, provider: str = CPU, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime session on `provider` (CPU behind any other one, as the server builds it); ORT's own errors."""
    data = model if isinstance(model, bytes) else model.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # a provider that cannot run a graph is reported once, by the caller
    if threads:
        opts.intra_op_num_threads = threads
    providers: list = [(provider, provider_options(provider))]
    if provider != CPU:
        providers.append(CPU)  # ops the first provider lacks run here, as in serving
    return ort.InferenceSession(data, sess_options=opts, providers=providers)


def ort_session(model: onnx.ModelProto | bytes, threads: int = 0, provider: str = CPU) -> ort.InferenceSession:
    """An onnxruntime session (CPU by default); a model ORT refuses is a clear error, not a crash."""
    try:
        return raw_session(model, provider, threads)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
        raise GanserveError(f"onnxruntime cannot load the exported model: {first_line(exc)}") from exc


def ort_predictor(session: ort.InferenceSession) -> Predictor:
    """Wrap a session; inputs are cast to the graph's own types (so fp16-I/O graphs take float32 arrays too)."""
    types = {i.name: numpy_type(i.type, None) for i in session.get_inputs()}
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


def p50_ms(run: Predictor, inputs: dict[str, np.ndarray], repeats: int = 5, warm_up: bool = True) -> float:
    """Median wall time of ``run`` on ``inputs`` over ``repeats`` runs (after one warm-up run), in ms."""
    if warm_up:
        run(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(inputs)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2] * 1e3
