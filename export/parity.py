"""Parity between torch and onnxruntime: random and real inputs, two batch sizes, two spatial sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec, Predictor

BATCH_SIZES = (1, 3)


@dataclass
class ParityCase:
    """One set of named inputs and a label saying where it came from (random/real, batch, sizes)."""

    label: str
    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray] | None = None  # the reference outputs, computed once and reused per precision


def _shape_label(inputs: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}{list(v.shape)}" for k, v in inputs.items())


def _random_tensor(t: TensorSpec, shape: list[int], like: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random values a model accepts for this tensor: in its value range, a valid label index, or N(0, 1)."""
    dtype = np.dtype(t.numpy_dtype)
    if dtype.kind == "f":
        if t.value_range is not None:
            lo, hi = t.value_range
            return rng.uniform(lo, hi, size=shape).astype(dtype)
        return rng.standard_normal(size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dtype)
    high = len(t.labels) if t.labels else max(int(like.max()) + 1, 2)
    return rng.integers(0, high, size=shape).astype(dtype)


def random_inputs(spec: ExportSpec, batch: int, grow: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs shaped like the example, with `batch` items and each dynamic axis grown by grow*k*step."""
    rng = np.random.default_rng(seed)
    step = spec.spatial_multiple * max(1, math.ceil(8 / spec.spatial_multiple))
    out = {}
    for t, x in zip(spec.inputs, spec.example_inputs):
        like = x.detach().cpu().numpy()
        shape = [batch, *like.shape[1:]]
        k = 0
        for axis, dim in enumerate(t.shape, start=1):
            if dim == -1:
                k += 1
                shape[axis] += grow * k * step
        out[t.name] = _random_tensor(t, shape, like, rng)
    return out


def _batched(real: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A second batch size from a real sample: itself plus its mirror image along the last axis."""
    return {k: np.concatenate([v, v[..., ::-1]], axis=0) for k, v in real.items()}


def parity_cases(spec: ExportSpec, seed: int = 0) -> list[ParityCase]:
    """Random inputs at two batch sizes (and two spatial sizes when dynamic) plus the spec's real inputs."""
    cases = [ParityCase("example", {t.name: x.detach().cpu().numpy() for t, x in zip(spec.inputs, spec.example_inputs)})]
    for grow in (0, 1) if spec.dynamic_spatial else (0,):
        for batch in BATCH_SIZES:
            inputs = random_inputs(spec, batch, grow, seed + 10 * grow + batch)
            cases.append(ParityCase(f"random {_shape_label(inputs)}", inputs))
    for real in spec.parity_inputs:
        real = {k: np.ascontiguousarray(v) for k, v in real.items()}
        cases.append(ParityCase(f"real {_shape_label(real)}", real))
        doubled = _batched(real)
        cases.append(ParityCase(f"real {_shape_label(doubled)}", doubled))
    return cases


def max_abs_error(expected: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    """Largest |expected - got| over all outputs; inf when shapes differ or `got` holds NaN/inf."""
    worst = 0.0
    for name, ref in expected.items():
        out = got.get(name)
        if out is None or out.shape != ref.shape or not np.all(np.isfinite(out)):
            return math.inf
        if ref.size:
            worst = max(worst, float(np.max(np.abs(ref.astype(np.float64) - out.astype(np.float64)))))
    return worst


def measure_parity(
    reference: Predictor,
    candidate: Predictor,
    cases: list[ParityCase],
    tolerance: float | None = None,
    what: str = "fp32",
    progress: bool = False,
) -> dict[str, Any]:
    """Run both predictors on every case; the max abs error per case and overall, gated by `tolerance`."""
    checked = []
    for case in tqdm(cases, desc=f"parity {what}", unit="case", disable=not progress, leave=False):
        if case.expected is None:
            case.expected = reference(case.inputs)
        err = max_abs_error(case.expected, candidate(case.inputs))
        checked.append({"inputs": case.label, "max_abs_error": err})
        if math.isinf(err):
            raise GanserveError(f"{what} parity failed on {case.label}: wrong shape, NaN or inf in the output")
    worst = max(c["max_abs_error"] for c in checked)
    if tolerance is not None and worst > tolerance:
        bad = max(checked, key=lambda c: c["max_abs_error"])
        raise GanserveError(f"{what} parity failed: max abs error {worst:.3g} > {tolerance:g} on {bad['inputs']}")
    return {"max_abs_error": worst, "tolerance": tolerance, "cases": len(checked), "checked": checked}
