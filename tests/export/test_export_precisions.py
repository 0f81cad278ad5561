"""fp16 and int8 exports: converted graphs, quality before/after in the card, gross failures refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from torch import nn
from tritonclient.grpc import model_config_pb2

import export_tiny_apps as tiny
from export_helpers import snapshot
from ganserve.export.exporter import export_from_spec, read_card
from ganserve.export.onnx_export import to_onnx
from ganserve.export.variants import to_fp16, to_int8
from ganserve.export.predictors import ort_predictor, ort_session
from ganserve.export.providers import MEASURE_ORDER
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.quality import REFERENCE_TOLERANCE
from ganserve.core.export_spec import ExportSpec


@pytest.fixture(scope="module")
def upsampler() -> tiny.TinyUpsampler:
    return tiny.TinyUpsampler(tiny.UpsamplerConfig())


def _dtypes(model: onnx.ModelProto) -> set[int]:
    return {i.data_type for i in model.graph.initializer}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_precision_card_records_quality_before_and_after(precision: str, upsampler, tmp_path: Path) -> None:
    out = export_from_spec(upsampler.export_spec(), tmp_path, "up", precision=precision)
    card = read_card(out)
    assert card.precision == precision
    fp32, chosen = card.metrics["by_precision"]["fp32"], card.metrics["by_precision"][precision]
    assert card.metrics["psnr"] == chosen["psnr"] and np.isfinite(chosen["psnr"])
    assert card.metrics["quality_delta_vs_fp32"] == pytest.approx(chosen["psnr"] - fp32["psnr"])
    assert abs(card.metrics["quality_delta_vs_fp32"]) < 0.5  # a near-identity net: precision barely matters
    assert card.parity["tolerance"] is None and card.parity["fp32_max_abs_error"] <= 1e-4
    # The server's rule for an output without ground truth: max abs error within REFERENCE_TOLERANCE of the value
    # range ([0, 1] here) on real inputs; the random ones (outside the data the int8 scales were calibrated on) may
    # go past it, but not past twice that.
    limit = REFERENCE_TOLERANCE[precision]
    real = [c["max_abs_error"] for c in card.parity["checked"] if c["inputs"].startswith("real")]
    assert len(real) == 4 and 0 < max(real) < limit
    assert 0 < card.parity["max_abs_error"] < (2e-3 if precision == "fp16" else 2 * limit)
    assert card.parity["quality"]["passed"] and f"(limit {limit:.1e})" in card.parity["quality"]["figures"]
    assert card.parity["provider"] in MEASURE_ORDER
    model = onnx.load(out / "model.onnx")
    ops = {n.op_type for n in model.graph.node}
    if precision == "fp16":
        assert onnx.TensorProto.FLOAT16 in _dtypes(model) and onnx.TensorProto.FLOAT not in _dtypes(model)
    else:
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # Clients are unchanged: float32 in and out, as the Triton config says.
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    cfg = text_format.Parse((tmp_path / "up" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP32
    assert {p.key: p.value for p in model.metadata_props}["ganserve.precision"] == precision


def test_fp16_half_io_declares_fp16_tensors(upsampler, tmp_path: Path) -> None:
    out = export_from_spec(upsampler.export_spec(), tmp_path, "up", precision="fp16", keep_io_fp32=False)
    model = onnx.load(out / "model.onnx")
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    cfg = text_format.Parse((tmp_path / "up" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.input[0].data_type == model_config_pb2.TYPE_FP16 and read_card(out).inputs[0].dtype == "FP16"


class _Resizer(nn.Module):
    """Resize (whose scales input must stay float32) after a conv: the fp16 converter must keep that slot fp32."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.conv(x), scale_factor=2.0, mode="bilinear", align_corners=False)


def _spec(module: nn.Module, **kw) -> ExportSpec:
    return ExportSpec(
        module=module.eval(), example_inputs=(torch.rand(1, 3, 8, 8),),
        inputs=[TensorSpec("x", [3, -1, -1], value_range=[0.0, 1.0])], outputs=[TensorSpec("y", [3, -1, -1])],
        task="translation", architecture=type(module).__name__, **kw,
    )


def test_fp16_keeps_float32_only_slots() -> None:
    torch.manual_seed(0)
    spec = _spec(_Resizer())
    fp32 = to_onnx(spec)
    half = to_fp16(fp32)
    x = np.random.default_rng(0).random((2, 3, 12, 10), dtype=np.float32)
    want = ort_predictor(ort_session(fp32))({"x": x})["y"]
    got = ort_predictor(ort_session(half))({"x": x})["y"]
    assert got.shape == (2, 3, 24, 20) and got.dtype == np.float32
    assert np.max(np.abs(got - want)) < 5e-3


class _Underflow(nn.Module):
    """Finite in float32, -inf in float16: both constants round to 0 in float16, so the log sees 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x * 1e-8 + 1e-9)


def test_fp16_non_finite_output_is_a_gross_failure_and_writes_nothing(tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(GanserveError, match="fp16 parity failed.*NaN or inf"):
        export_from_spec(_spec(_Underflow()), tmp_path / "repo", "underflow", precision="fp16")
    assert snapshot(tmp_path) == before


def test_int8_without_calibration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GanserveError, match="int8 needs calibration"):
        export_from_spec(_spec(_Resizer()), tmp_path / "repo", "r", precision="int8")
    assert not (tmp_path / "repo").exists()


def test_int8_calibrates_on_every_batch(upsampler) -> None:
    spec = upsampler.export_spec()
    seen = []

    def calibration():
        for batch in spec.calibration():
            seen.append(batch["lr"].shape)
            yield batch

    model = to_int8(to_onnx(spec), calibration)
    assert seen == [(1, 3, 32, 32)] * 4
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_failing_evaluation_is_a_clear_error(tmp_path: Path) -> None:
    def evaluate(predict):
        predict({"x": np.zeros((1, 3, 8, 8), dtype=np.float32)})
        raise ValueError("held-out images missing")

    with pytest.raises(GanserveError, match="held-out evaluation failed: ValueError: held-out images missing"):
        export_from_spec(_spec(_Resizer(), evaluate=evaluate, quality_key="q"), tmp_path / "repo", "r")
    assert not (tmp_path / "repo").exists()
