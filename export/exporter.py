"""`export_checkpoint`: checkpoint -> checked, parity-proven ONNX in a Triton-layout model repository."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import onnx

from ganserve.core.contract import (
    CARD_FILE, CONFIG_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, TensorSpec, onnx_metadata, triton_config,
    variant_file,
)
from ganserve.core.errors import CheckpointError, GanserveError, described
from ganserve.core.files import file_sha256
from ganserve.core.precisions import EXPORT_PRECISIONS
from ganserve.core.quality import RULE_TEXT, ReferenceCase, check_outputs, reference_cases
from ganserve.export.card import build_card, finite, source_facts, training_facts
from ganserve.export.defaults import DEFAULT_OPSET, FP32_TOLERANCE
from ganserve.export.memory import measure_memory
from ganserve.export.onnx_export import to_onnx
from ganserve.export.parity import ParityCase, measure_parity, parity_cases
from ganserve.export.variants import INT8_METHODS, NO_CALIBRATION, to_fp16, to_int8
from ganserve.core.onnxruntime_facts import CPU, short
from ganserve.export.predictors import ort_predictor, ort_session, p50_ms, torch_predictor
from ganserve.export.providers import measure_on_first_runnable, resolve_providers
from ganserve.export.reference import npz_bytes, reference_arrays
from ganserve.export.repository import check_target, write_model
from ganserve.export.self_ensemble import measure_ensemble
from ganserve.core.export_spec import ExportSpec, Predictor

QUALITY_RULE = f"server rule (ganserve.core.quality) on the reference set: {RULE_TEXT}"
FAILING = ("refuse", "write", "drop")  # what the export does with a variant that fails the quality rule


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
        raise GanserveError(f"held-out evaluation failed: {described(exc)}") from exc


def _variant(spec: ExportSpec, fp32: onnx.ModelProto, precision: str, keep_io_fp32: bool, progress: bool,
             method: str = "qdq") -> onnx.ModelProto:
    """The fp32 graph converted to fp16 or int8 (the conversions the export stage knows)."""
    if precision == "fp16":
        return to_fp16(fp32, keep_io_fp32)
    return to_int8(fp32, spec.calibration, progress, method)


_NOTES = {
    "fp16": lambda keep_io, method="": f"fp16 weights and compute; inputs/outputs {'float32' if keep_io else 'float16'}",
    "int8": lambda keep_io, method="qdq": f"int8: {INT8_METHODS[method]}",
}


def _p50_ms(run: Predictor, cases: list[ReferenceCase], repeats: int = 5) -> float:
    """Median wall time of one run on the reference set's largest case (after one warm-up), in ms."""
    return p50_ms(run, max(cases, key=lambda c: sum(v.size for v in c.inputs.values())).inputs, repeats)


def _int8_variant(spec: ExportSpec, fp32: onnx.ModelProto, methods: tuple[str, ...], measure: Any,
                  ref_cases: list[ReferenceCase], progress: bool) -> tuple[onnx.ModelProto, dict[str, Any], Predictor, str]:
    """Quantize by each of ``methods``; keep the fastest that passes the quality rule (else the first method's), and
    record every method's figures in the card."""
    tried = []
    for method in methods:
        model = _variant(spec, fp32, "int8", True, progress, method)
        facts, run = measure(model, f"int8 variant ({method})" if len(methods) > 1 else "int8 variant")
        p50 = _p50_ms(run, ref_cases) if len(methods) > 1 else None
        tried.append((method, model, facts, run, p50))
    passing = [t for t in tried if t[2]["quality"]["passed"]]
    method, model, facts, run, _ = min(passing, key=lambda t: t[4] or 0.0) if passing else tried[0]
    facts["method"] = method
    if len(methods) > 1:
        facts["methods"] = [{"method": m, "provider": f["provider"], "passed": f["quality"]["passed"],
                             "figures": f["quality"]["figures"], "p50_ms_largest_reference_case": round(t, 3)}
                            for m, _, f, _, t in tried]
        _say(progress, f"int8: kept {method} of " + ", ".join(
            f"{m} ({'passes' if f['quality']['passed'] else 'fails'}, {t:.1f} ms)" for m, _, f, _, t in tried))
    return model, facts, run, method


def measure_precision(
    spec: ExportSpec, model: onnx.ModelProto, fp32: onnx.ModelProto, precision: str, what: str, reference: Predictor,
    cases: list[ParityCase], ref_cases: list[ReferenceCase], providers: Sequence[str], progress: bool,
) -> tuple[dict[str, Any], Predictor]:
    """Parity vs torch and the server's quality rule for a faster precision, on the first provider that runs it."""

    def measure(run: Predictor) -> tuple[dict[str, Any], tuple[bool, str]]:
        parity = measure_parity(reference, run, cases, None, precision, progress)
        return parity, check_outputs(spec.outputs, ref_cases, [run(c.inputs) for c in ref_cases], precision)

    measured = measure_on_first_runnable(model, what, providers, measure)
    parity, (passed, figures) = measured.result
    facts: dict[str, Any] = {"provider": measured.provider, "max_abs_error": parity["max_abs_error"],
                             "checked": parity["checked"], "quality": {"passed": passed, "figures": figures}}
    if measured.provider != CPU:  # the same provider at true fp32 (explicit hint), so its own error is on record
        fp32_run = ort_predictor(ort_session(fp32, provider=measured.provider))
        facts["inference_precision_hint"] = "f32"
        facts["provider_fp32_max_abs_error"] = measure_parity(
            reference, fp32_run, cases, None, f"fp32 on {short(measured.provider)}", progress)["max_abs_error"]
    _say(progress, f"{what} on {short(measured.provider)}: max abs error {parity['max_abs_error']:.3g}; "
                   f"quality {'passes' if passed else 'FAILS'}: {figures}")
    return facts, measured.predictor


def _check_variants(precision: str, variants: tuple[str, ...]) -> None:
    """Variants sit beside an fp32 model.onnx, one file per faster precision the export stage can make."""
    if not variants:
        return
    if precision != "fp32":
        raise GanserveError("--variants needs --precision fp32 (the variants sit beside the fp32 model)")
    bad = [v for v in variants if v not in _NOTES]
    if bad:
        raise GanserveError(f"unknown variant precision(s) {bad}; use {', '.join(_NOTES)}")


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
    variants: tuple[str, ...] = (),
    providers: Sequence[str] | None = None,
    allow_failing_variants: bool = False,
    drop_failing_variants: bool = False,
    int8_methods: tuple[str, ...] = ("qdq",),
    training: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    progress: bool = False,
) -> Path:
    """Export one ExportSpec into <repo>/<name>/<version>/; returns that version folder. Nothing is written on failure.

    Faster precisions are measured on the first of ``providers`` (default: CPU, then OpenVINO) that runs them; a
    variant, or a non-fp32 ``precision``, failing the server's quality rule on the reference set is refused unless
    ``allow_failing_variants`` (written anyway) or ``drop_failing_variants`` (a failing variant is left out, and the
    card says why). int8 is made by each of ``int8_methods`` and the fastest that passes is kept."""
    if allow_failing_variants and drop_failing_variants:
        raise GanserveError("a failing variant is either written (--allow-failing-variants) or dropped "
                            "(--drop-failing-variants), not both")
    unknown = [m for m in int8_methods if m not in INT8_METHODS]
    if unknown or not int8_methods:
        raise GanserveError(f"unknown int8 method(s) {unknown}; use {', '.join(INT8_METHODS)}")
    if precision not in EXPORT_PRECISIONS:
        raise GanserveError(f"unknown precision {precision!r}; use one of {', '.join(EXPORT_PRECISIONS)}")
    _check_variants(precision, variants)
    tried = resolve_providers(providers)
    repo, version = check_target(repo, name, version, overwrite)
    _say(progress, f"{spec.architecture} -> {repo}/{name}/{version} ({precision}, opset {opset})")
    fp32 = to_onnx(spec, opset)
    cases = parity_cases(spec)
    reference = torch_predictor(spec)
    fp32_run = ort_predictor(ort_session(fp32))
    fp32_parity = measure_parity(reference, fp32_run, cases, FP32_TOLERANCE, "fp32", progress)
    ref_arrays = reference_arrays(spec, reference)
    ref_cases = reference_cases(ref_arrays.items())
    _say(progress, f"fp32 parity: max abs error {fp32_parity['max_abs_error']:.3g} over {fp32_parity['cases']} cases")
    fp32_metrics = _evaluate(spec, fp32_run)
    notes: list[str] = []
    model, chosen_parity, chosen_metrics = fp32, dict(fp32_parity, provider=CPU), fp32_metrics
    if precision != "fp32":
        model = _variant(spec, fp32, precision, keep_io_fp32, progress)
        notes.append(_NOTES[precision](keep_io_fp32))
        chosen_parity, run = measure_precision(spec, model, fp32, precision, precision, reference, cases, ref_cases,
                                               tried, progress)
        chosen_parity["tolerance"] = None
        quality = chosen_parity["quality"]
        if not quality["passed"]:  # the same gate as a variant's: a model the server would refuse is not written
            if not allow_failing_variants:
                raise GanserveError(f"{precision} fails the quality rule on {short(chosen_parity['provider'])}: "
                                    f"{quality['figures']}; pass --allow-failing-variants to write it anyway")
            notes.append(f"{precision} model fails the quality rule ({quality['figures']}); written on request")
        chosen_metrics = _evaluate(spec, run)
        key = spec.quality_key
        if key in chosen_metrics and math.isfinite(fp32_metrics.get(key, 0.0)) and not math.isfinite(chosen_metrics[key]):
            raise GanserveError(f"{precision}: held-out {key} is {chosen_metrics[key]} (fp32: {fp32_metrics[key]:.4g})")
    extra_files: dict[str, onnx.ModelProto] = {}
    variant_facts: dict[str, dict[str, Any]] = {}
    dropped: dict[str, str] = {}

    def measure(vmodel: onnx.ModelProto, what: str) -> tuple[dict[str, Any], Predictor]:
        return measure_precision(spec, vmodel, fp32, what.split()[0], what, reference, cases, ref_cases, tried, progress)

    def drop(v: str, why: str) -> None:
        dropped[v] = why
        notes.append(f"variant {variant_file(v)} not written: it {why}")
        _say(progress, f"{v} variant dropped: it {why}")

    for v in variants:
        method = ""
        if v == "int8" and spec.calibration is None and drop_failing_variants:
            drop(v, NO_CALIBRATION.removeprefix("int8 "))
            continue
        if v == "int8":
            vmodel, vfacts, vrun, method = _int8_variant(spec, fp32, int8_methods, measure, ref_cases, progress)
        else:
            vmodel = _variant(spec, fp32, v, True, progress)
            vfacts, vrun = measure(vmodel, f"{v} variant")
        quality = vfacts["quality"]
        if not quality["passed"]:
            if drop_failing_variants:
                drop(v, f"fails the quality rule on {short(vfacts['provider'])}: {quality['figures']}")
                continue
            if not allow_failing_variants:
                raise GanserveError(f"{v} variant fails the quality rule on {short(vfacts['provider'])}: "
                                    f"{quality['figures']}; pass --allow-failing-variants to write it anyway")
            notes.append(f"variant {variant_file(v)} fails the quality rule ({quality['figures']}); written on request")
        vfacts.pop("checked")
        variant_facts[v] = {"file": variant_file(v), **vfacts, "metrics": _evaluate(spec, vrun)}
        notes.append(f"variant {variant_file(v)}: " + (_NOTES[v](True, method) if method else _NOTES[v](True)))
        extra_files[variant_file(v)] = vmodel
    metrics: dict[str, Any] = dict(chosen_metrics)
    if spec.evaluate is None:
        notes.append("no held-out evaluation declared by the model; quality metrics absent")
    else:
        key = spec.quality_key
        metrics["quality_key"] = key
        metrics["by_precision"] = {"fp32": fp32_metrics, precision: chosen_metrics,
                                   **{v: f["metrics"] for v, f in variant_facts.items()}}
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
        "provider": chosen_parity["provider"],
    }
    parity.update({k: chosen_parity[k] for k in ("quality", "inference_precision_hint", "provider_fp32_max_abs_error")
                   if k in chosen_parity})
    if precision != "fp32" or variant_facts or dropped:
        parity["quality_rule"] = QUALITY_RULE
    if variant_facts:
        parity["variants"] = {v: {k: x for k, x in f.items() if k != "metrics"} for v, f in variant_facts.items()}
    if dropped:
        parity["variants_dropped"] = dropped
    half_io = precision == "fp16" and not keep_io_fp32
    card = build_card(
        spec, name, version, precision, training or {}, metrics, parity, source or {}, notes,
        inputs=_card_tensors(spec.inputs, half_io), outputs=_card_tensors(spec.outputs, half_io),
    )
    card.ensemble = finite(measure_ensemble(spec, card, fp32_run, fp32_metrics, _evaluate))
    e = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in card.ensemble.items()}
    _say(progress, f"self-ensemble x{e['passes']} (fp32): held-out {e['metric']} {e['plain']} -> {e['ensemble']} "
                   f"(gain {e['gain']}) for {e['cost_ratio']}x the time ({e['latency_ms_plain']} -> "
                   f"{e['latency_ms_ensemble']} ms)" if e["applies"] else f"self-ensemble not measured: {e['why']}")
    card.memory = measure_memory(spec, {precision: model, **{v: extra_files[variant_file(v)] for v in variant_facts}})
    if card.memory:
        _say(progress, "memory per run: " + "; ".join(f"{k}: {v['base_bytes'] / 2**20:.0f} MiB + {v['bytes_per_pixel']:.0f} "
                                                         "bytes per input pixel" for k, v in card.memory.items()))
    onnx.helper.set_model_props(model, onnx_metadata(card))
    version_files = {MODEL_FILE: model.SerializeToString(), REFERENCE_FILE: npz_bytes(ref_arrays)}
    for fname, vmodel in extra_files.items():
        onnx.helper.set_model_props(vmodel, {**onnx_metadata(card), "ganserve.precision": fname.split(".")[1]})
        version_files[fname] = vmodel.SerializeToString()
    return write_model(
        repo, name, version,
        version_files,
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
    variants: tuple[str, ...] = (),
    providers: Sequence[str] | None = None,
    allow_failing_variants: bool = False,
    drop_failing_variants: bool = False,
    int8_methods: tuple[str, ...] = ("qdq",),
    progress: bool = False,
    options: dict[str, Any] | None = None,
) -> Path:
    """Rebuild the model a checkpoint names and export it (see export_from_spec); returns the version folder.

    ``options`` override config values of the rebuilt application before ``export_spec()`` (``--option``)."""
    from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint file")
    payload = load_checkpoint(checkpoint)
    name = name or str(payload["model"])
    check_target(repo, name, version, overwrite)  # refuse a bad destination before the slow part
    resolve_providers(providers)
    app = build_from_checkpoint(checkpoint, options)
    spec = app.export_spec()
    if not isinstance(spec, ExportSpec):
        raise GanserveError(f"model {payload['model']!r}: export_spec() returned {type(spec).__name__}, not an ExportSpec")
    config = getattr(app, "config", None)
    return export_from_spec(
        spec, repo, name,
        version=version, precision=precision, opset=opset, overwrite=overwrite, keep_io_fp32=keep_io_fp32,
        variants=variants, providers=providers, allow_failing_variants=allow_failing_variants,
        drop_failing_variants=drop_failing_variants, int8_methods=int8_methods,
        training=training_facts(payload, spec),
        source=source_facts(payload, file_sha256(checkpoint), config),
        progress=progress,
    )


def read_card(version_dir: str | Path) -> ModelCard:
    """The model card beside an exported version folder (convenience for callers and tests)."""
    return ModelCard.load(Path(version_dir).parent / CARD_FILE)
