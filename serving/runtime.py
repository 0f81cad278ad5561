"""ONNX Runtime sessions: execution-provider choice, thread settings, warm-up and the reference check."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ganserve.errors import RepositoryError

log = logging.getLogger("ganserve.serving")

# Short names accepted by --providers, in the order the server prefers them.
PROVIDER_NAMES = {
    "cuda": "CUDAExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ORT_TYPES = {
    "tensor(float)": "FP32", "tensor(float16)": "FP16", "tensor(double)": "FP64", "tensor(int64)": "INT64",
    "tensor(int32)": "INT32", "tensor(uint8)": "UINT8", "tensor(int8)": "INT8", "tensor(bool)": "BOOL",
}
# Max abs error vs the fp32 reference, per unit of value range, that a precision may show.
REFERENCE_TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2, "fp16": 1e-2, "int8": 6e-2}


def select_providers(requested: list[str] | None = None) -> tuple[list[str], str]:
    """Providers to ask ORT for, best first, and a sentence saying why (CPU is always the last resort)."""
    available = ort.get_available_providers()
    wanted = [s.strip().lower() for s in (requested or ["cuda", "cpu"]) if s.strip()]
    unknown = [s for s in wanted if s not in PROVIDER_NAMES]
    if unknown:
        raise RepositoryError(f"unknown execution provider(s) {unknown} (known: {', '.join(PROVIDER_NAMES)})")
    chosen, missing = [], []
    for short in wanted:
        full = PROVIDER_NAMES[short]
        (chosen if full in available else missing).append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    reason = f"using {chosen[0]}"
    if missing:
        reason += f"; not in this onnxruntime build ({ort.get_device()}): {', '.join(missing)}"
    return chosen, reason


@dataclass
class RuntimeSettings:
    """How sessions are built; one-to-one with the serve command's flags."""

    providers: list[str] | None = None
    intra_op_threads: int = 0  # 0 = number of cores

    def threads(self) -> int:
        return self.intra_op_threads or os.cpu_count() or 1


class OrtRunner:
    """One model version's ORT session; `run` is the synchronous callable the batcher drives."""

    def __init__(self, path: Path, settings: RuntimeSettings) -> None:
        providers, self.provider_reason = select_providers(settings.providers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads()
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for corrupt or unsupported files
            raise RepositoryError(f"{path}: onnxruntime cannot load it ({str(exc).splitlines()[0][:300]})") from exc
        self.provider = self.session.get_providers()[0]
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output for already-validated feeds."""
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))


def zero_inputs(runner: OrtRunner, spatial: int = 16) -> dict[str, np.ndarray]:
    """A small all-zero input for warm-up: dynamic axes get 1 (batch) or `spatial` (others)."""
    feeds = {}
    for name, meta in runner.inputs.items():
        shape = [d if isinstance(d, int) and d > 0 else (1 if i == 0 else spatial) for i, d in enumerate(meta.shape)]
        dtype = {"FP32": np.float32, "FP16": np.float16, "INT64": np.int64, "INT32": np.int32, "UINT8": np.uint8,
                 "BOOL": np.bool_, "FP64": np.float64, "INT8": np.int8}[ORT_TYPES.get(meta.type, "FP32")]
        feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def load_reference(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """reference.npz split into inputs ("in:<name>") and expected outputs ("out:<name>")."""
    with np.load(path) as data:
        inputs = {k[3:]: data[k] for k in data.files if k.startswith("in:")}
        outputs = {k[4:]: data[k] for k in data.files if k.startswith("out:")}
    return inputs, outputs


@dataclass
class WarmupReport:
    """What the load-time run showed: its duration and, with a reference set, the error against it."""

    seconds: float
    max_abs_error: float | None = None
    tolerance: float | None = None

    @property
    def reference_ok(self) -> bool | None:
        return None if self.max_abs_error is None else self.max_abs_error <= (self.tolerance or 0.0)


def warm_up(runner: OrtRunner, reference: Path | None, precision: str = "fp32", value_span: float = 1.0) -> WarmupReport:
    """Run once (reference inputs when present, else zeros) and compare with the reference outputs."""
    expected: dict[str, np.ndarray] = {}
    feeds = zero_inputs(runner)
    if reference is not None:
        ref_in, expected = load_reference(reference)
        if set(ref_in) == set(runner.inputs):
            feeds = ref_in
    start = time.perf_counter()
    outputs = runner.run(feeds)
    report = WarmupReport(seconds=time.perf_counter() - start)
    common = [k for k in expected if k in outputs and outputs[k].shape == expected[k].shape]
    if common:
        report.max_abs_error = max(float(np.max(np.abs(outputs[k].astype(np.float64) - expected[k]))) for k in common)
        report.tolerance = REFERENCE_TOLERANCE.get(precision, 1e-3) * max(value_span, 1e-6)
    return report
