"""Variants at export: measured on a provider that runs them, gated by the server's quality rule, refused cleanly."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

import export_tiny_apps as tiny
from export_helpers import run_cli, snapshot
from ganserve.export.defaults import FP32_TOLERANCE
from ganserve.export.exporter import measure_precision
from ganserve.export.onnx_export import to_onnx
from ganserve.export.parity import parity_cases
from ganserve.export.variants import to_int8
from ganserve.core.onnxruntime_facts import CPU, OPENVINO
from ganserve.export.predictors import raw_session, torch_predictor
from ganserve.export.providers import MEASURE_ORDER
from ganserve.export.reference import reference_arrays
from ganserve.core.contract import CARD_FILE, REFERENCE_FILE, ModelCard
from ganserve.core.quality import PSNR_DROP_DB, reference_cases

# A bicubic skip Resizes the input: onnxruntime-openvino 1.24's CPU provider cannot run that Resize in the int8 graph.
SR_SKIP = {"blocks": 1, "channels": 8, "bicubic_skip": True}


@pytest.fixture(scope="module")
def sr_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_checkpoint(tmp_path_factory.mktemp("sr") / "srresnet.pt", "srresnet", SR_SKIP)


@pytest.fixture(scope="module")
def miscalibrated_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.save_tiny_checkpoint(tmp_path_factory.mktemp("mis") / "mis.pt", tiny.MISCALIBRATED)


def _outputs(path: Path, provider: str, inputs: list[dict[str, np.ndarray]]) -> list[np.ndarray] | None:
    """The file's first output per input on `provider` (as the export builds the session), None if it cannot run."""
    try:
        sess = raw_session(path.read_bytes(), provider)
        return [sess.run(None, feed)[0] for feed in inputs]
    except Exception:  # ORT's own error types: this provider cannot run the graph
        return None


def _psnr(got: list[np.ndarray], truth: list[np.ndarray]) -> float:
    flat = [np.concatenate([a.ravel().astype(np.float64) for a in arrays]) for arrays in (got, truth)]
    return 10 * math.log10(1.0 / float(np.mean((flat[0] - flat[1]) ** 2)))


def _one_line_refusal(rc: int, out: str, err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("ganserve export: error: ") and all(p in lines[0] for p in parts), lines[0]


def test_int8_variant_is_measured_on_the_first_provider_that_runs_it(sr_ckpt: Path, tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    rc, out, err = run_cli(capsys, str(sr_ckpt), "--repo", str(repo), "--variants", "int8", "--quiet")
    assert rc == 0, err
    vdir = repo / "srresnet" / "1"
    card = ModelCard.load(repo / "srresnet" / CARD_FILE)
    facts = card.parity["variants"]["int8"]
    with np.load(vdir / REFERENCE_FILE) as ref:
        keys = sorted({k.rpartition("/")[0] for k in ref.files})
        ins = [{"lr": ref[f"{k}/in:lr" if k else "in:lr"]} for k in keys]
        fp32 = [ref[f"{k}/out:sr" if k else "out:sr"] for k in keys]
        truth = [ref[f"{k}/truth:sr" if k else "truth:sr"] for k in keys]
    runs = {p: _outputs(vdir / "model.int8.onnx", p, ins) for p in MEASURE_ORDER if p in ort.get_available_providers()}
    expected = next(p for p, got in runs.items() if got is not None)
    assert facts["provider"] == expected and facts["file"] == "model.int8.onnx"

    # The gate's figure is the server's rule recomputed here from the files, on the provider that measured it.
    drop = _psnr(fp32, truth) - _psnr(runs[expected], truth)
    reported = float(facts["quality"]["figures"].split("drop ")[1].split(",")[0])
    assert facts["quality"]["passed"] and drop <= PSNR_DROP_DB and reported == pytest.approx(drop, abs=1.5e-3)
    assert 0 < facts["max_abs_error"] < 0.06  # the int8 max-abs tolerance per unit of range; the output spans [0, 1]
    if expected == OPENVINO:  # measured at true fp32 elsewhere: the provider's own fp32 error is fp32-sized
        assert facts["inference_precision_hint"] == "f32" and facts["provider_fp32_max_abs_error"] <= FP32_TOLERANCE
    else:
        assert "provider_fp32_max_abs_error" not in facts
    held_out = card.metrics["by_precision"]
    assert abs(held_out["int8"]["psnr_y"] - held_out["fp32"]["psnr_y"]) <= PSNR_DROP_DB
    assert card.parity["provider"] == CPU and "0.1 dB" in card.parity["quality_rule"]
    assert f"model.int8.onnx: measured on {expected.removesuffix('ExecutionProvider')}" in out


def test_variant_failing_the_rule_is_refused_and_nothing_written(miscalibrated_ckpt: Path, tmp_path: Path, capsys) -> None:
    repo = tmp_path / "repo"
    rc, out, err = run_cli(capsys, str(miscalibrated_ckpt), "--repo", str(repo), "--variants", "int8", "--quiet")
    _one_line_refusal(rc, out, err, "int8 variant fails the quality rule on ", "PSNR", "limit 0.1",
                      "--allow-failing-variants")
    drop = float(err.split("drop ")[1].split(",")[0])
    assert drop > 10  # clipped activations: far past the 0.1 dB limit
    assert snapshot(tmp_path) == {} and not repo.exists()
    assert not [p for p in tmp_path.iterdir() if ".export-" in p.name]

    rc, out, err = run_cli(capsys, str(miscalibrated_ckpt), "--repo", str(repo), "--variants", "int8", "--quiet",
                           "--allow-failing-variants")
    assert rc == 0, err
    card = ModelCard.load(repo / tiny.MISCALIBRATED / CARD_FILE)
    assert card.parity["variants"]["int8"]["quality"]["passed"] is False
    assert any("fails the quality rule" in n and "written on request" in n for n in card.notes)
    assert (repo / tiny.MISCALIBRATED / "1" / "model.int8.onnx").is_file()


def test_failing_variant_is_dropped_on_request_and_the_card_says_why(miscalibrated_ckpt: Path, tmp_path: Path,
                                                                    capsys) -> None:
    """--drop-failing-variants (how shipped models and the demo export): the fp32 model is written, the failing int8
    is not, and the card and the command's output name the figures that failed."""
    repo = tmp_path / "repo"
    rc, out, err = run_cli(capsys, str(miscalibrated_ckpt), "--repo", str(repo), "--variants", "int8,fp16", "--quiet",
                           "--drop-failing-variants")
    assert rc == 0, err
    vdir = repo / tiny.MISCALIBRATED / "1"
    card = ModelCard.load(repo / tiny.MISCALIBRATED / CARD_FILE)
    assert not (vdir / "model.int8.onnx").exists() and (vdir / "model.fp16.onnx").is_file()
    assert set(card.parity["variants"]) == {"fp16"}
    assert "fails the quality rule" in card.parity["variants_dropped"]["int8"]
    assert "int8 not written: it fails the quality rule" in out
    assert any(n.startswith("variant model.int8.onnx not written") for n in card.notes)

    with pytest.raises(SystemExit) as refused:  # argparse's own refusal: exit 2, one usage line
        run_cli(capsys, str(miscalibrated_ckpt), "--repo", str(tmp_path / "r2"), "--variants", "int8",
                "--drop-failing-variants", "--allow-failing-variants")
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_model_without_calibration_drops_int8_on_request_and_refuses_it_otherwise(tmp_path: Path) -> None:
    """How the shipped entries and the demo export a model that declares no calibration data: fp32 is written and
    the card says why int8 is not; asked for int8 plainly, the export refuses with the same reason."""
    import dataclasses

    from ganserve.core.errors import GanserveError
    from ganserve.export.exporter import export_from_spec
    from ganserve.training.registry import build

    spec = dataclasses.replace(build(tiny.UPSAMPLER, {}).export_spec(), calibration=None)
    version = export_from_spec(spec, tmp_path / "repo", "nocal", variants=("int8",), drop_failing_variants=True)
    card = ModelCard.load(version.parent / CARD_FILE)
    assert not (version / "model.int8.onnx").exists() and "variants" not in card.parity
    assert card.parity["variants_dropped"] == {"int8": "needs calibration data, and this model's ExportSpec declares none"}
    with pytest.raises(GanserveError, match="int8 needs calibration data"):
        export_from_spec(spec, tmp_path / "repo2", "nocal", variants=("int8",))
    assert not (tmp_path / "repo2" / "nocal").exists()


def test_int8_by_both_methods_keeps_one_that_passes_and_records_both(sr_ckpt: Path, tmp_path: Path, capsys) -> None:
    """qdq and NNCF are both measured on the reference set; the card records each one's verdict and time, and the
    written variant is the fastest that passes (or qdq, when neither does)."""
    pytest.importorskip("nncf")
    repo = tmp_path / "repo"
    rc, out, err = run_cli(capsys, str(sr_ckpt), "--repo", str(repo), "--variants", "int8", "--quiet",
                           "--int8-methods", "qdq,nncf", "--allow-failing-variants")
    assert rc == 0, err
    facts = ModelCard.load(repo / "srresnet" / CARD_FILE).parity["variants"]["int8"]
    tried = {m["method"]: m for m in facts["methods"]}
    assert set(tried) == {"qdq", "nncf"}
    assert all(m["p50_ms_largest_reference_case"] > 0 and m["figures"] for m in tried.values())
    passing = [m for m in tried.values() if m["passed"]]
    kept = min(passing, key=lambda m: m["p50_ms_largest_reference_case"])["method"] if passing else "qdq"
    assert facts["method"] == kept and f"model.int8.onnx ({kept} of qdq, nncf): measured on" in out
    quantized = onnx.load(repo / "srresnet" / "1" / "model.int8.onnx")
    assert any(n.op_type == "QuantizeLinear" for n in quantized.graph.node)

    rc, out, err = run_cli(capsys, str(sr_ckpt), "--repo", str(tmp_path / "r2"), "--variants", "int8",
                           "--int8-methods", "qdq,magic")
    _one_line_refusal(rc, out, err, "unknown int8 method(s) ['magic']")


def test_precision_failing_the_rule_is_refused_like_a_variant(miscalibrated_ckpt: Path, tmp_path: Path,
                                                             capsys) -> None:
    """--precision int8 (the model.onnx itself, not a variant) passes the same gate: refused, nothing written."""
    repo = tmp_path / "repo"
    rc, out, err = run_cli(capsys, str(miscalibrated_ckpt), "--repo", str(repo), "--precision", "int8", "--quiet")
    _one_line_refusal(rc, out, err, "int8 fails the quality rule on ", "PSNR", "limit 0.1", "--allow-failing-variants")
    assert float(err.split("drop ")[1].split(",")[0]) > 10
    assert snapshot(tmp_path) == {} and not repo.exists()
    rc, out, err = run_cli(capsys, str(miscalibrated_ckpt), "--repo", str(repo), "--precision", "int8", "--quiet",
                           "--allow-failing-variants")
    assert rc == 0, err
    card = ModelCard.load(repo / tiny.MISCALIBRATED / CARD_FILE)
    assert card.precision == "int8" and card.parity["quality"]["passed"] is False
    assert any("int8 model fails the quality rule" in n and "written on request" in n for n in card.notes)


def _scrambled(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same int8 graph with every int8 weight tensor's values shuffled (shapes, scales and zero points kept)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    rng = np.random.default_rng(0)
    count = 0
    for init in out.graph.initializer:
        if init.data_type == TensorProto.INT8 and init.dims and int(np.prod(init.dims)) > 1:
            arr = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(rng.permutation(arr.ravel()).reshape(arr.shape), init.name))
            count += 1
    assert count >= 2
    return out


def test_scrambled_int8_weights_fail_the_export_gate() -> None:
    """The tiny upsampler with ground truth and its proper calibration: the real int8 passes, shuffled weights do not."""
    spec = tiny.MiscalibratedUpsampler(tiny.UpsamplerConfig()).export_spec()
    spec.calibration = tiny.TinyUpsampler(tiny.UpsamplerConfig())._calibration
    fp32 = to_onnx(spec)
    reference = torch_predictor(spec)
    cases, ref_cases = parity_cases(spec), reference_cases(reference_arrays(spec, reference).items())
    good = to_int8(fp32, spec.calibration)
    facts = {}
    for name, model in (("good", good), ("scrambled", _scrambled(good))):
        facts[name], _ = measure_precision(spec, model, fp32, "int8", "int8 variant", reference, cases, ref_cases,
                                           MEASURE_ORDER, False)
    assert facts["good"]["quality"]["passed"] and not facts["scrambled"]["quality"]["passed"]
    assert facts["scrambled"]["provider"] == facts["good"]["provider"]
    drops = {k: float(f["quality"]["figures"].split("drop ")[1].split(",")[0]) for k, f in facts.items()}
    assert drops["good"] <= PSNR_DROP_DB < 1.0 < drops["scrambled"]


def test_no_provider_can_run_it_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """The real process, its real stderr: restricted to a provider that cannot run the int8 graph here."""
    ckpt = tiny.save_tiny_checkpoint(tmp_path / "cubic.pt", tiny.CUBIC)
    if OPENVINO in ort.get_available_providers():  # the openvino flavour's CPU provider fails on the int8 cubic Resize
        only, parts = "cpu", ("CPU: ", "Resize", "let --providers include openvino")
    else:  # plain onnxruntime runs it on CPU; OpenVINO is simply not in this build
        only, parts = "openvino", ("OpenVINO: not in this onnxruntime build", "let --providers include cpu",
                                   "install the openvino flavour: make setup ORT=openvino")
    repo = tmp_path / "repo"
    here = Path(__file__).resolve().parent  # the tiny applications register when export_tiny_apps is imported
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1])])}
    run = "import sys, export_tiny_apps; from ganserve.pipeline.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", run, "export", str(ckpt), "--repo", str(repo), "--variants", "int8",
         "--providers", only, "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    _one_line_refusal(proc.returncode, proc.stdout, proc.stderr,
                      "int8 variant: no installed ONNX Runtime provider can run it (", *parts)
    assert not repo.exists() and not [p for p in tmp_path.iterdir() if ".export-" in p.name]


def test_unknown_provider_is_refused(sr_ckpt: Path, tmp_path: Path, capsys) -> None:
    rc, out, err = run_cli(capsys, str(sr_ckpt), "--repo", str(tmp_path / "repo"), "--variants", "int8",
                           "--providers", "tpu", "--quiet")
    _one_line_refusal(rc, out, err, "unknown provider 'tpu'")
    assert not (tmp_path / "repo").exists()


def test_int8_model_itself_is_measured_where_it_runs(sr_ckpt: Path, tmp_path: Path, capsys) -> None:
    """--precision int8 (model.onnx itself int8) takes the same provider order and records the rule's verdict."""
    repo = tmp_path / "repo"
    rc, _, err = run_cli(capsys, str(sr_ckpt), "--repo", str(repo), "--precision", "int8", "--quiet")
    assert rc == 0, err
    card = ModelCard.load(repo / "srresnet" / CARD_FILE)
    with np.load(repo / "srresnet" / "1" / REFERENCE_FILE) as ref:
        feed = [{"lr": ref["in:lr"]}]
    runs = [p for p in MEASURE_ORDER if p in ort.get_available_providers()
            and _outputs(repo / "srresnet" / "1" / "model.onnx", p, feed) is not None]
    assert card.precision == "int8" and card.parity["provider"] == runs[0]
    assert card.parity["quality"]["passed"] and "drop" in card.parity["quality"]["figures"]
    assert card.parity["tolerance"] is None and 0 < card.parity["max_abs_error"] < 0.06
