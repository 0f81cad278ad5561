"""The quality rule sees local artifacts: a small patch gone wrong fails, a real bf16 run of a shipped model passes."""

from __future__ import annotations

import numpy as np
import pytest

from ganserve.core.contract import TensorSpec
from ganserve.core.quality import (
    ARTIFACT_MAX, MASK_FLIPPED, PSNR_DROP_DB, ReferenceCase, check_outputs, reference_cases,
)
from ganserve.core.shipped import shipped_dir

IMAGE = TensorSpec("y", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])
MASK = TensorSpec("m", [1, -1, -1], "FP32", "mask", "NCHW", [0.0, 1.0])


def _photo(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth picture (a blurred random field), so SSIM sees structure as in a photo."""
    noise = rng.random(shape)
    for axis in (-1, -2):
        noise = (noise + np.roll(noise, 1, axis) + np.roll(noise, -1, axis)) / 3
    return noise.astype(np.float32)


def _case(rng: np.random.Generator, with_truth: bool = True) -> ReferenceCase:
    fp32 = _photo(rng, (2, 3, 128, 128))
    truth = np.clip(fp32 + rng.normal(0, 0.05, fp32.shape), 0, 1).astype(np.float32)
    return ReferenceCase({"x": fp32}, {"y": fp32}, {"y": truth} if with_truth else {})


@pytest.mark.parametrize("with_truth", [True, False])
def test_a_small_patch_off_by_a_third_of_the_range_fails(with_truth: bool) -> None:
    case = _case(np.random.default_rng(0), with_truth)
    bad = case.expected["y"].copy()
    bad[1, :, 30:34, 30:34] += 0.3  # 16 pixels of 32,768: too few to move the set's PSNR by 0.1 dB
    ok, text = check_outputs([IMAGE], [case], [{"y": bad}], "int8")
    assert not ok
    assert f"max 0.300 (limit {ARTIFACT_MAX})" in text
    if with_truth:  # the mean-based figure alone would have passed it
        drop = float(text.split("drop ")[1].split(",")[0])
        assert drop <= PSNR_DROP_DB


def test_small_noise_everywhere_passes_and_the_figures_are_named() -> None:
    rng = np.random.default_rng(1)
    case = _case(rng)
    near = case.expected["y"] + rng.normal(0, 0.002, case.expected["y"].shape).astype(np.float32)
    ok, text = check_outputs([IMAGE], [case], [{"y": near}], "int8")
    assert ok, text
    assert "p99.9" in text and "SSIM min" in text and "drop" in text


def test_a_wide_shift_fails_on_ssim_or_percentile_while_max_is_in_bounds() -> None:
    rng = np.random.default_rng(2)
    case = _case(rng)
    shifted = case.expected["y"] + rng.normal(0, 0.05, case.expected["y"].shape).astype(np.float32).clip(-0.15, 0.15)
    ok, text = check_outputs([IMAGE], [case], [{"y": shifted}], "int8")
    assert not ok and "limit 0.2)" in text
    assert float(text.split("max ")[1].split(" ")[0]) <= ARTIFACT_MAX  # the max alone would pass it


def test_mask_rule_allows_soft_error_but_not_flipped_regions() -> None:
    rng = np.random.default_rng(3)
    field = _photo(rng, (1, 1, 48, 48))
    want = (1 / (1 + np.exp(-40 * (field - field.mean())))).astype(np.float32)  # mostly near 0 or 1, as a real map
    case = ReferenceCase({"x": want}, {"m": want})
    soft = want + rng.normal(0, 0.01, want.shape).astype(np.float32)  # bf16-like: 3x the image tolerance in max
    ok, text = check_outputs([MASK], [case], [{"m": soft}], "bf16")
    assert ok, text
    flipped = want.copy()
    flipped[0, 0, :12, :12] = 1.0 - flipped[0, 0, :12, :12]  # 6% of the map changes side
    ok, text = check_outputs([MASK], [case], [{"m": flipped}], "bf16")
    assert not ok and f"(limit {MASK_FLIPPED:.0%})" in text


def test_torch_bf16_of_a_shipped_model_passes_and_the_same_run_with_a_patch_fails() -> None:
    """The rule on a real reduced-precision run: torch's bf16 autocast of the shipped SR model, on its reference set."""
    torch = pytest.importorskip("torch")
    from ganserve.training.checkpoint import build_from_checkpoint

    folder = shipped_dir() / "srresnet"
    spec = build_from_checkpoint(folder / "checkpoint.pt", None).export_spec()
    cases = reference_cases(np.load(folder / "1" / "reference.npz").items())
    outputs = []
    for case in cases:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = spec.module.eval()(torch.from_numpy(case.inputs["lr"]))
        outputs.append({"sr": out.float().numpy()})
    ok, text = check_outputs(spec.outputs, cases, outputs, "bf16")
    assert ok, text
    outputs[-1]["sr"][0, :, 40:44, 40:44] += 0.3
    ok, text = check_outputs(spec.outputs, cases, outputs, "bf16")
    assert not ok, text
