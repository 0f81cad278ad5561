"""Round trip for every registered model: checkpoint -> `ganserve export` -> repository that ORT and Triton accept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import export_tiny_apps as tiny
from export_helpers import run_cli
from ganserve.core.contract import ModelCard, model_versions
from ganserve.training import registry

# Tiny configs so each round trip takes seconds; a model missing here exports with its defaults.
TINY_CONFIGS = {
    "srresnet": {"blocks": 1, "channels": 8},
    "srgan": {"blocks": 1, "channels": 8, "d_channels": 8},
    "pix2pix": {"depth": 5, "ngf": 4, "max_mult": 2, "ndf": 4, "d_max_mult": 2, "crop": 32},
    # batch norm here: static int8 QDQ quantizes instance norm's input per tensor, which a random-weight
    # instance-norm generator amplifies to ~0.5 max abs error (fp16 is fine); see the README section on image translation
    "cyclegan": {"ngf": 4, "blocks": 1, "ndf": 4, "d_max_mult": 2, "crop": 32, "norm": "batch"},
}
ROUND_TRIP = [m for m in registry.available() if not m.startswith("test-broken")]


def parse_config(path: Path) -> model_config_pb2.ModelConfig:
    """config.pbtxt through Triton's own ModelConfig message: a parse error fails the test."""
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.mark.parametrize("model", ROUND_TRIP)
def test_round_trip(model: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tiny.save_tiny_checkpoint(tmp_path / f"{model}.pt", model, TINY_CONFIGS.get(model))
    repo = tmp_path / "repo"
    rc, out, err = run_cli(capsys, str(ckpt), "--repo", str(repo), "--quiet")
    assert rc == 0, err
    vdir = repo / model / "1"
    assert out.strip().startswith(str(vdir))
    card = ModelCard.load(repo / model / "model_card.json")
    spec = registry.build(model, TINY_CONFIGS.get(model)).export_spec()

    # The card: what, how big, how good, how close to torch, where from.
    assert (card.name, card.task, card.architecture, card.version, card.precision) == (
        model, spec.task, spec.architecture, 1, "fp32")
    assert card.parameters == sum(p.numel() for p in spec.module.parameters()) > 0
    assert 0 <= card.parity["max_abs_error"] <= 1e-4 and card.parity["tolerance"] == 1e-4
    assert card.tile_safe == spec.tile_safe and card.scale == spec.scale
    assert len(card.source["checkpoint_sha256"]) == 64 and card.source["config_hash"] and card.source["commit"]
    assert card.training["model"] == model and card.training["step"] == 7
    if spec.evaluate is not None:
        assert spec.quality_key in card.metrics and np.isfinite(card.metrics[spec.quality_key])
        assert card.metrics["by_precision"]["fp32"][spec.quality_key] == card.metrics[spec.quality_key]

    # model.onnx: named tensors, dynamic batch (and H/W), metadata_props from the contract.
    proto = onnx.load(vdir / "model.onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ganserve.task"] == spec.task and meta["ganserve.precision"] == "fp32"
    assert json.loads(meta["ganserve.card"])["name"] == model
    assert meta["ganserve.checkpoint_sha256"] == card.source["checkpoint_sha256"]
    first = proto.graph.input[0].type.tensor_type.shape.dim
    assert first[0].dim_param == "batch"
    if spec.dynamic_spatial:
        assert all(d.dim_param for d in first[2:])

    # reference.npz replays through ORT to its recorded fp32 outputs.
    ref = np.load(vdir / "reference.npz")
    case0 = [k for k in ref.files if "/" not in k and not k.startswith("truth:")]  # further cases: "case<k>/..."
    assert sorted(case0) == sorted([f"in:{t.name}" for t in spec.inputs] + [f"out:{t.name}" for t in spec.outputs])
    sess = ort.InferenceSession(str(vdir / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {t.name: ref[f"in:{t.name}"] for t in spec.inputs})
    for t, g in zip(spec.outputs, got):
        np.testing.assert_allclose(g, ref[f"out:{t.name}"], atol=1e-4)

    # config.pbtxt parses as Triton's ModelConfig with -1 where the card says dynamic.
    cfg = parse_config(repo / model / "config.pbtxt")
    assert cfg.name == model and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == card.max_batch_size
    assert [list(i.dims) for i in cfg.input] == [t.shape for t in spec.inputs]
    assert [list(o.dims) for o in cfg.output] == [t.shape for t in spec.outputs]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4, 8]
    assert model_versions(repo / model) == [1]


def test_dynamic_axes_run_at_new_sizes(upsampler_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The exported upsampler runs at a batch and sizes it was never traced at, with the x2 output shape."""
    rc, _, err = run_cli(capsys, str(upsampler_ckpt), "--repo", str(tmp_path), "--quiet")
    assert rc == 0, err
    sess = ort.InferenceSession(str(tmp_path / tiny.UPSAMPLER / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 16, 16), (5, 3, 21, 37)]:
        (y,) = sess.run(None, {"lr": np.random.default_rng(0).random(shape, dtype=np.float32)})
        assert y.shape == (shape[0], 3, shape[2] * 2, shape[3] * 2)


def test_fixed_size_model_keeps_fixed_dims(classifier_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A classifier (not fully convolutional) gets a dynamic batch only; Triton dims stay concrete."""
    rc, _, err = run_cli(capsys, str(classifier_ckpt), "--repo", str(tmp_path), "--quiet")
    assert rc == 0, err
    cfg = parse_config(tmp_path / tiny.CLASSIFIER / "config.pbtxt")
    assert list(cfg.input[0].dims) == [1, 8, 8] and list(cfg.output[0].dims) == [10]
    dims = onnx.load(tmp_path / tiny.CLASSIFIER / "1" / "model.onnx").graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, 8, 8]


@pytest.mark.parametrize("model", [m for m in ROUND_TRIP if not m.startswith("test-")])
def test_real_models_convert_to_fp16_and_int8(model: str) -> None:
    """Each registered application's graph survives both conversions and keeps the server's quality rule.

    On real inputs the error vs torch stays within the rule's max-abs tolerance per unit of value range
    (REFERENCE_TOLERANCE: fp16 1e-2, int8 6e-2), measured on the first provider that runs the graph; on the reference
    set the rule itself passes (PSNR drop <= 0.1 dB where there is ground truth, no top-1 change for classifiers)."""
    from ganserve.export.onnx_export import to_onnx
    from ganserve.export.parity import measure_parity, parity_cases
    from ganserve.export.variants import to_fp16, to_int8
    from ganserve.export.providers import MEASURE_ORDER, measure_on_first_runnable
    from ganserve.export.predictors import torch_predictor
    from ganserve.export.reference import reference_arrays
    from ganserve.core.quality import REFERENCE_TOLERANCE, check_outputs, reference_cases

    spec = registry.build(model, TINY_CONFIGS.get(model)).export_spec()
    fp32 = to_onnx(spec)
    reference = torch_predictor(spec)
    cases = [c for c in parity_cases(spec) if c.label.startswith("real")]
    ref_cases = reference_cases(reference_arrays(spec, reference).items())
    lo, hi = spec.outputs[0].value_range or (-1.0, 1.0)
    for precision, converted in (("fp16", to_fp16(fp32)), ("int8", to_int8(fp32, spec.calibration))):
        measured = measure_on_first_runnable(converted, precision, MEASURE_ORDER, lambda run: (
            measure_parity(reference, run, cases),
            check_outputs(spec.outputs, ref_cases, [run(c.inputs) for c in ref_cases], precision)))
        parity, (passed, figures) = measured.result
        assert 0 < parity["max_abs_error"] < REFERENCE_TOLERANCE[precision] * (hi - lo), (measured.provider, parity)
        assert passed, (measured.provider, figures)
