"""`export_checkpoint`: checkpoint -> checked, parity-proven ONNX in a Triton-layout model repository."""

from __future__ import annotations

import dataclasses
import io
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ganserve.contract import (
    CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, TensorSpec, onnx_metadata, triton_config,
)
from ganserve.errors import CheckpointError, GanserveError
from export.card import build_card, file_sha256, source_facts, training_facts
from export.defaults import DEFAULT_OPSET, FP32_TOLERANCE, PRECISIONS
from export.onnx_export import to_onnx
from export.parity import ParityCase, measure_parity, parity_cases
from export.precision import to_fp16, to_int8
from export.predictors import ort_predictor, ort_session, torch_predictor
from export.repository import check_target, write_model
from training.export_spec import ExportSpec, Predictor

REFERENCE_ITEMS = 2  # items kept in reference.npz: enough to check a precision, small enough to ship


def _say(progress: bool, message: str) -> None:
    if progress:
        print(f"export: {message}", file=sys.stderr, flush=True)


def _evaluate(spec: ExportSpec, predictor: Predictor) -> dict[str, float]:
    """The model's own held-out quality through this predictor ({} when the spec declares no evaluation)."""
    if spec.evaluate is None:
        return {}
    try:
        return {k: float(v) for k, v in spec.evaluate(predictor).items()}
    except GanserveError:
        raise
    except Exception as exc:  # model code: any failure means the export cannot vouch for its quality
        raise GanserveError(f"held-out evaluation failed: {type(exc).__name__}: {exc}".splitlines()[0]) from exc


def _reference(cases: list[ParityCase], reference: Predictor) -> bytes:
    """reference.npz: a few real inputs when the spec has them (else the example) and their fp32 torch outputs."""
    case = next((c for c in cases if c.label.startswith("real")), cases[0])
    inputs = {k: np.ascontiguousarray(v[:REFERENCE_ITEMS]) for k, v in case.inputs.items()}
    outputs = reference(inputs)
    buf = io.BytesIO()
    np.savez(buf, **{f"in:{k}": v for k, v in inputs.items()}, **{f"out:{k}": v for k, v in outputs.items()})
    return buf.getvalue()


def _card_tensors(tensors: list[TensorSpec], half_io: bool) -> list[TensorSpec]:
    """The card's tensors; float ones become FP16 when an fp16 graph takes and returns float16 directly."""
    return [dataclasses.replace(t, dtype="FP16" if half_io and t.dtype == "FP32" else t.dtype) for t in tensors]


def export_from_spec(
    spec: ExportSpec,
    repo: str | Path,
    name: str,
    *,
    version: int | None = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    keep_io_fp32: bool = True,
    training: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Export one ExportSpec into <repo>/<name>/<version>/; returns that version folder. Nothing is written on failure."""
    if precision not in PRECISIONS:
        raise GanserveError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    repo, version = check_target(repo, name, version, overwrite)
    _say(progress, f"{spec.architecture} -> {repo}/{name}/{version} ({precision}, opset {opset})")
    fp32 = to_onnx(spec, opset)
    cases = parity_cases(spec)
    reference = torch_predictor(spec)
    fp32_run = ort_predictor(ort_session(fp32))
    fp32_parity = measure_parity(reference, fp32_run, cases, FP32_TOLERANCE, "fp32", progress)
    _say(progress, f"fp32 parity: max abs error {fp32_parity['max_abs_error']:.3g} over {fp32_parity['cases']} cases")
    fp32_metrics = _evaluate(spec, fp32_run)
    notes: list[str] = []
    model, chosen_parity, chosen_metrics = fp32, fp32_parity, fp32_metrics
    if precision != "fp32":
        if precision == "fp16":
            model = to_fp16(fp32, keep_io_fp32)
            notes.append(f"fp16 weights and compute; inputs/outputs {'float32' if keep_io_fp32 else 'float16'}")
        else:
            model = to_int8(fp32, spec.calibration, progress)
            notes.append("int8: static QDQ, per-channel int8 weights, uint8 activations, MinMax calibration")
        run = ort_predictor(ort_session(model))
        chosen_parity = measure_parity(reference, run, cases, None, precision, progress)
        _say(progress, f"{precision} parity: max abs error {chosen_parity['max_abs_error']:.3g}")
        chosen_metrics = _evaluate(spec, run)
        key = spec.quality_key
        if key in chosen_metrics and math.isfinite(fp32_metrics.get(key, 0.0)) and not math.isfinite(chosen_metrics[key]):
            raise GanserveError(f"{precision}: held-out {key} is {chosen_metrics[key]} (fp32: {fp32_metrics[key]:.4g})")
    metrics: dict[str, Any] = dict(chosen_metrics)
    if spec.evaluate is None:
        notes.append("no held-out evaluation declared by the model; quality metrics absent")
    else:
        key = spec.quality_key
        metrics["quality_key"] = key
        metrics["by_precision"] = {"fp32": fp32_metrics, precision: chosen_metrics}
        if precision != "fp32" and key in fp32_metrics and key in chosen_metrics:
            metrics["quality_delta_vs_fp32"] = chosen_metrics[key] - fp32_metrics[key]
        _say(progress, f"held-out quality ({precision}): " + ", ".join(f"{k} {v:.4g}" for k, v in chosen_metrics.items()))
    parity = {
        "precision": precision,
        "reference": "torch fp32, eval mode",
        "max_abs_error": chosen_parity["max_abs_error"],
        "tolerance": chosen_parity["tolerance"],
        "fp32_max_abs_error": fp32_parity["max_abs_error"],
        "fp32_tolerance": FP32_TOLERANCE,
        "checked": chosen_parity["checked"],
    }
    half_io = precision == "fp16" and not keep_io_fp32
    card = build_card(
        spec, name, version, precision, training or {}, metrics, parity, source or {}, notes,
        inputs=_card_tensors(spec.inputs, half_io), outputs=_card_tensors(spec.outputs, half_io),
    )
    onnx.helper.set_model_props(model, onnx_metadata(card))
    return write_model(
        repo, name, version,
        {MODEL_FILE: model.SerializeToString(), REFERENCE_FILE: _reference(cases, reference)},
        {CONFIG_FILE: triton_config(card), CARD_FILE: card.to_json()},
        overwrite,
    )


def export_checkpoint(
    checkpoint: str | Path,
    repo: str | Path,
    *,
    name: str | None = None,
    version: int | None = None,
    precision: str = "fp32",
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    keep_io_fp32: bool = True,
    progress: bool = False,
) -> Path:
    """Rebuild the model a checkpoint names and export it (see export_from_spec); returns the version folder."""
    from training.checkpoint import build_from_checkpoint, load_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    payload = load_checkpoint(checkpoint)
    name = name or str(payload["model"])
    check_target(repo, name, version, overwrite)  # refuse a bad destination before the slow part
    app = build_from_checkpoint(checkpoint)
    spec = app.export_spec()
    if not isinstance(spec, ExportSpec):
        raise GanserveError(f"model {payload['model']!r}: export_spec() returned {type(spec).__name__}, not an ExportSpec")
    config = getattr(app, "config", None)
    return export_from_spec(
        spec, repo, name,
        version=version, precision=precision, opset=opset, overwrite=overwrite, keep_io_fp32=keep_io_fp32,
        training=training_facts(payload, spec),
        source=source_facts(payload, file_sha256(checkpoint), config),
        progress=progress,
    )


def read_card(version_dir: str | Path) -> ModelCard:
    """The model card beside an exported version folder (convenience for callers and tests)."""
    return ModelCard.load(Path(version_dir).parent / CARD_FILE)
