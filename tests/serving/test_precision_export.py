"""The export stage stores what the load-time choice needs (reference cases with ground truth, an int8 variant),
and the server's PSNR-drop check on them agrees with one computed here from the files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from ganserve.core.contract import CARD_FILE, MODEL_FILE, REFERENCE_FILE, ModelCard, TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.quality import PSNR_DROP_DB, REFERENCE_TOLERANCE, ReferenceCase, check_outputs
from ganserve.export.exporter import export_from_spec
from ganserve.serving.runtime import RuntimeSettings, choose_runner
from ganserve.core.export_spec import ExportSpec


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth deterministic 'photo' (1x3xHxW in [0, 1])."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((1, 3, h // 8, w // 8), dtype=np.float32))
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1).numpy()


def _down2(hr: np.ndarray) -> np.ndarray:
    n, c, h, w = hr.shape
    return hr.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).astype(np.float32)


def _spec(targets_ok: bool = True) -> ExportSpec:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))
    with torch.no_grad():  # start near nearest-neighbour so the output resembles the truth
        net[0].weight.mul_(0.1)
        net[2].weight.mul_(0.1)
        for i in range(3):
            net[0].weight[i, i, 1, 1] = 1.0
            for k in range(4):
                net[2].weight[i * 4 + k, i, 1, 1] = 1.0
    net.eval()
    hrs = [np.concatenate([_photo(32, 32, 1), _photo(32, 32, 2)]), _photo(48, 40, 3)]
    lrs = [_down2(hr) for hr in hrs]
    targets = [{"sr": hr} for hr in hrs] if targets_ok else [{"sr": hrs[0]}]
    return ExportSpec(
        module=net, example_inputs=(torch.from_numpy(lrs[0][:1]),),
        inputs=[TensorSpec("lr", [3, -1, -1], value_range=[0.0, 1.0])],
        outputs=[TensorSpec("sr", [3, -1, -1], value_range=[0.0, 1.0])],
        task="super_resolution", architecture="tiny-x2", scale=2,
        parity_inputs=[{"lr": lr} for lr in lrs], reference_targets=targets,
        calibration=lambda: iter([{"lr": _down2(_photo(32, 32, 10 + i))} for i in range(3)]),
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("export") / "repo"
    return export_from_spec(_spec(), repo, "tiny", variants=("int8",))


def test_version_folder_holds_the_variant_and_every_reference_case(exported: Path) -> None:
    assert (exported / MODEL_FILE).is_file() and (exported / "model.int8.onnx").is_file()
    card = ModelCard.load(exported.parent / CARD_FILE)
    assert card.precision == "fp32" and card.parity["variants"]["int8"]["file"] == "model.int8.onnx"
    # The server's quality rule (ganserve.core.quality) holds for the variant the export wrote: max abs error within the
    # int8 tolerance of the [0, 1] value range (measured 0.029 vs limit 0.06; a variant calibrated on half-range data
    # errs 0.54), and, since the reference set has ground truth, a PSNR drop within PSNR_DROP_DB (measured 0.070).
    int8_facts = card.parity["variants"]["int8"]
    low, high = card.outputs[0].value_range
    limit = REFERENCE_TOLERANCE["int8"] * (high - low)
    assert (low, high) == (0.0, 1.0) and 0 < int8_facts["max_abs_error"] <= limit
    assert int8_facts["quality"]["passed"] is True
    assert float(int8_facts["quality"]["figures"].split("drop ")[1].split(",")[0]) <= PSNR_DROP_DB
    with np.load(exported / REFERENCE_FILE) as ref:
        assert sorted(ref.files) == ["case1/in:lr", "case1/out:sr", "case1/truth:sr", "in:lr", "out:sr", "truth:sr"]
        assert ref["in:lr"].shape == (2, 3, 16, 16) and ref["case1/truth:sr"].shape == (1, 3, 48, 40)
        fp32 = ort.InferenceSession(str(exported / MODEL_FILE), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(fp32.run(None, {"lr": ref["case1/in:lr"]})[0], ref["case1/out:sr"], atol=1e-5)
        # the same rule recomputed from the files: the int8 file against the stored fp32 outputs and the truth
        int8 = ort.InferenceSession(str(exported / "model.int8.onnx"), providers=["CPUExecutionProvider"])
        cases = [ReferenceCase({"lr": ref[f"{p}in:lr"]}, {"sr": ref[f"{p}out:sr"]}, {"sr": ref[f"{p}truth:sr"]})
                 for p in ("", "case1/")]
        got = [{"sr": int8.run(None, c.inputs)[0]} for c in cases]
        assert max(float(np.abs(g["sr"] - c.expected["sr"]).max()) for g, c in zip(got, cases)) <= limit
        assert check_outputs(card.outputs, cases, got, "int8")[0]  # PSNR drop vs truth within PSNR_DROP_DB


def _psnr(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    mse = np.mean((np.concatenate([x.ravel() for x in a]).astype(np.float64) - np.concatenate([x.ravel() for x in b])) ** 2)
    return 10 * math.log10(1.0 / mse)


def test_the_servers_psnr_drop_matches_one_computed_from_the_files(exported: Path) -> None:
    card = ModelCard.load(exported.parent / CARD_FILE)
    choice = choose_runner(exported, card, exported / REFERENCE_FILE, RuntimeSettings(providers=["cpu"], intra_op_threads=1))
    rows = {t.precision: t for t in choice.table if t.provider == "CPUExecutionProvider"}
    assert rows["fp32"].status in ("chosen", "passed") and "drop +0.000" in rows["fp32"].quality
    with np.load(exported / REFERENCE_FILE) as ref:
        ins, outs, truth = [ref["in:lr"], ref["case1/in:lr"]], [ref["out:sr"], ref["case1/out:sr"]], [ref["truth:sr"], ref["case1/truth:sr"]]
    int8 = ort.InferenceSession(str(exported / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    drop = _psnr(outs, truth) - _psnr([int8.run(None, {"lr": x})[0] for x in ins], truth)
    reported = float(rows["int8"].quality.split("drop ")[1].split(",")[0])
    assert reported == pytest.approx(drop, abs=1.5e-3)
    assert rows["int8"].status in ("chosen", "passed") if drop <= 0.1 else rows["int8"].status == "failed quality"


def test_reference_targets_must_match_the_parity_inputs(tmp_path: Path) -> None:
    with pytest.raises(GanserveError, match="reference_targets has 1 entries for 2 parity inputs"):
        export_from_spec(_spec(targets_ok=False), tmp_path / "repo", "tiny")
    assert not (tmp_path / "repo" / "tiny").exists()
