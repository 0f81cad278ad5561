"""What export and serving both need to know about ONNX Runtime, written once (no torch, no onnxruntime import).

Provider names and the short names the command lines take, ORT's tensor type strings as KServe datatypes and
numpy types, and the options the OpenVINO provider is given (an explicit inference precision: without one it
silently runs bf16 on bf16 hardware; no CPU pinning: pinned, its threads cannot move off the cores the event loop,
gRPC and a second session also need — measured on the 2-core Xeon, README's fast-CPU section).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

CPU = "CPUExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
CUDA = "CUDAExecutionProvider"

# The short names --providers takes, in the order the server prefers them.
PROVIDER_NAMES = {"cuda": CUDA, "openvino": OPENVINO, "cpu": CPU}

# ORT's tensor type strings as KServe datatypes, and those as numpy types.
DATATYPES = {
    "tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64", "tensor(int64)": "INT64",
    "tensor(int32)": "INT32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8", "tensor(bool)": "BOOL",
}
NUMPY_TYPES = {"FP32": np.float32, "FP16": np.float16, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32,
               "UINT8": np.uint8, "INT8": np.int8, "BOOL": np.bool_}

# The OpenVINO inference precision each of our precisions asks for (int8 and fp16 are in the file itself).
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}


def short(provider: str) -> str:
    """CPUExecutionProvider -> CPU."""
    return provider.removesuffix("ExecutionProvider")


def numpy_type(ort_type: str, default: type = np.float32) -> type:
    """The numpy type of an ORT tensor type string ("tensor(float)" -> float32); `default` for an unknown one."""
    datatype = DATATYPES.get(ort_type)
    return NUMPY_TYPES[datatype] if datatype is not None else default


def openvino_options(precision: str) -> dict[str, str]:
    """The OpenVINO provider's options for one of our precisions: on the CPU, unpinned, with its inference hint."""
    config: dict[str, str] = {"ENABLE_CPU_PINNING": "NO"}
    if precision in OPENVINO_HINTS:
        config["INFERENCE_PRECISION_HINT"] = OPENVINO_HINTS[precision]
    return {"device_type": "CPU", "load_config": json.dumps({"CPU": config})}


def typical_feeds(inputs: Iterable[Any], side: int, seed: int | None = 0) -> dict[str, np.ndarray]:
    """A batch-1 input for a session's inputs (ORT's NodeArgs: name, shape, type): every free axis but the batch at
    `side`; floats uniform in [0, 1) drawn from `seed` in input order (None: zeros), other types zeros."""
    rng = None if seed is None else np.random.default_rng(seed)
    feeds = {}
    for meta in inputs:
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else side) for i, d in enumerate(meta.shape)]
        dtype = numpy_type(meta.type)
        floats = rng is not None and np.dtype(dtype).kind == "f"
        feeds[meta.name] = rng.random(shape).astype(dtype) if floats else np.zeros(shape, dtype)
    return feeds
