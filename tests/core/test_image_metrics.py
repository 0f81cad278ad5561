"""PSNR/SSIM on RGB and Y, the float -> uint8 rule, and equality with every copy the module replaced.

Each former copy is written out inline below from its parameters, so the equalities prove the shared functions give
the figures the project has always reported.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ganserve.core.contract import TensorSpec
from ganserve.core.image_metrics import (
    crop_border, from_uint8, gradient_energy, psnr, psnr_rgb, psnr_y, rgb_to_y, sharpness_ratio, ssim_rgb, ssim_y,
    to_uint8,
)
from ganserve.serving.imaging import to_pixels

WANG = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


@pytest.fixture()
def pair() -> tuple[np.ndarray, np.ndarray]:
    """A fixed random HxWx3 target in [0, 1] and a noisy prediction of it (float64)."""
    rng = np.random.default_rng(7)
    target = rng.random((40, 44, 3))
    return np.clip(target + rng.normal(0.0, 0.05, target.shape), 0.0, 1.0), target


# -- closed forms ----------------------------------------------------------------------------------------------
def test_constant_offset_gives_the_closed_form_psnr() -> None:
    target = np.full((12, 10, 3), 0.4)
    for d in (0.1, 0.02, 1 / 255):
        assert psnr_rgb(target + d, target) == pytest.approx(10 * math.log10(1.0 / d**2), rel=1e-12)
        assert psnr_rgb(target + d, target, data_range=2.0) == pytest.approx(10 * math.log10(4.0 / d**2), rel=1e-12)
    eight = np.full((5, 5, 3), 100, np.uint8)
    assert psnr(eight + 3, eight, 255.0) == pytest.approx(10 * math.log10(255.0**2 / 9), rel=1e-12)


def test_y_offset_gives_the_closed_form_psnr_y() -> None:
    target = np.full((16, 16, 3), 0.5)
    pred = target + 10.0 / 219.0  # Y rises by exactly 10 on every pixel (the weights sum to 219)
    assert psnr_y(pred, target, border=2) == pytest.approx(20 * math.log10(255 / 10), rel=1e-9)


def test_identical_images_give_ssim_one_and_psnr_inf_or_the_cap(pair) -> None:
    _, img = pair
    assert psnr_rgb(img, img) == math.inf and psnr_y(img, img, 4) == math.inf
    assert psnr_rgb(img, img, cap=60.0) == 60.0
    assert psnr_rgb(img, np.clip(img + 0.3, 0, 1), cap=60.0) < 60.0
    assert ssim_rgb(img, img) == pytest.approx(1.0) and ssim_y(img, img, 4) == pytest.approx(1.0)
    assert sharpness_ratio(img, img, 4) == pytest.approx(1.0)
    assert sharpness_ratio(np.full_like(img, 0.3), img) == 0.0


def test_y_of_pure_colours_is_bt601() -> None:
    colours = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]]], dtype=np.float64)
    y = rgb_to_y(colours)[0]
    assert y == pytest.approx([16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0], abs=1e-12)


def test_border_crop_removes_exactly_the_border() -> None:
    target = np.zeros((20, 24, 3))
    pred = target.copy()
    pred[:3] = 1.0  # error only in the top three rows
    assert psnr_rgb(pred, target, border=3) == math.inf
    assert psnr_rgb(pred, target, border=2) < 20.0
    assert psnr_y(pred, target, border=3) == math.inf
    assert crop_border(target, 3).shape == (14, 18, 3)  # a channel axis at -1 is not cropped by default
    assert crop_border(np.zeros((3, 20, 24)), 3, channel_axis=0).shape == (3, 14, 18)
    assert crop_border(np.zeros((20, 24)), 2).shape == (16, 20)
    assert crop_border(target, 0) is target
    chw = np.moveaxis(pred, -1, 0)
    assert psnr_rgb(chw, np.moveaxis(target, -1, 0), border=3, channel_axis=0) == math.inf


# -- the rounding rule -------------------------------------------------------------------------------------------
def test_to_uint8_rounds_exact_halves_to_even() -> None:
    halves = [(k, x) for k in range(255) if (x := (k + 0.5) / 255.0) * 255.0 == k + 0.5]
    assert len(halves) > 100  # most of them are exact in float64
    got = to_uint8(np.array([x for _, x in halves]))
    assert got.tolist() == [k + (k % 2) for k, _ in halves]  # k.5 -> the even neighbour
    assert to_uint8(np.array([0.5, 126.5 / 255.0, 127.5 / 255.0])).tolist() == [128, 126, 128]


def test_to_uint8_is_exact_just_below_a_half_where_adding_half_is_not() -> None:
    below = np.nextafter(np.float32(0.5), np.float32(0.0))  # 0.49999997
    x = np.float32(0.5 / 255.0)
    while np.float32(x * np.float32(255.0)) != below:  # the float32 whose scaled value is 0.49999997
        x = np.nextafter(x, np.float32(0.0))
    arr = np.array([x], np.float32)
    assert to_uint8(arr)[0] == 0
    assert (arr * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)[0] == 1  # the rule it replaces


def test_to_uint8_clips_out_of_range_values() -> None:
    x = np.array([-1.0, -1e-9, 0.0, 1.0, 1.0 + 1e-9, 7.5, 254.6 / 255.0])
    assert to_uint8(x).tolist() == [0, 0, 0, 255, 255, 255, 255]
    assert to_uint8(np.array([0, 1], np.int64)).tolist() == [0, 255]
    assert to_uint8(np.array([True, False])).tolist() == [255, 0]
    assert to_uint8(np.zeros((2, 3, 3), np.float32)).dtype == np.uint8


def test_to_uint8_gives_the_bytes_the_server_writes() -> None:
    rng = np.random.default_rng(3)
    y = rng.uniform(-0.2, 1.2, (1, 3, 17, 23)).astype(np.float32)
    y[0, 0, 0, :5] = np.array([0.5, 126.5, 127.5, 2.5, 3.5], np.float32) / np.float32(255.0)
    spec = TensorSpec("out", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])
    assert np.array_equal(to_uint8(y[0].transpose(1, 2, 0)), to_pixels(y, spec))
    signed = TensorSpec("out", [3, -1, -1], "FP32", "image", "NCHW", [-1.0, 1.0])
    z = y * 2 - 1
    assert np.array_equal(to_uint8((z[0].transpose(1, 2, 0) + np.float32(1.0)) / np.float32(2.0)), to_pixels(z, signed))


def test_to_uint8_equals_the_rint_copies_and_the_half_up_copies_off_ties() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(-0.1, 1.1, (64, 64, 3)).astype(np.float32)
    # srgan._uint8, demo_tasks' bic8, genbase/ssgan/cyclegan grids: rint of the clipped, scaled value
    assert np.array_equal(to_uint8(x), np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8))
    # bench.py: ((x - lo) / (hi - lo) * 255).round().clip(0, 255), on a [-1, 1] output
    z = x * 2 - 1
    old = ((z - -1.0) / 2.0 * 255).round().clip(0, 255).astype(np.uint8)
    assert np.array_equal(to_uint8((z - -1.0) / 2.0), old)
    # sr_eval / translation_eval / face_aging / attentive_gan: clip * 255 + 0.5, truncated (differs only on ties)
    half_up = (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    scaled = np.clip(x, 0.0, 1.0) * np.float32(255.0)
    ties = scaled - np.floor(scaled) == 0.5
    assert np.array_equal(to_uint8(x)[~ties], half_up[~ties])


def test_from_uint8_matches_demo_rgb() -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)
    grey = rgba[..., 0]
    assert np.array_equal(from_uint8(rgba), (np.asarray(rgba, dtype=np.float64) / 255.0)[..., :3])
    assert np.array_equal(from_uint8(grey), np.repeat((grey / 255.0)[..., None], 3, axis=2))
    assert np.array_equal(to_uint8(from_uint8(rgba)), rgba[..., :3])


# -- every replaced copy gives the same number -------------------------------------------------------------------
def _old_y(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    return 16.0 + img[..., 0] * 65.481 + img[..., 1] * 128.553 + img[..., 2] * 24.966


def test_y_figures_equal_the_former_training_metrics(pair) -> None:
    pred, target = pair
    b = 4
    ty, py = _old_y(target)[b:-b, b:-b], _old_y(pred)[b:-b, b:-b]
    assert psnr_y(pred, target, b) == float(peak_signal_noise_ratio(ty, py, data_range=255.0))
    assert ssim_y(pred, target, b) == float(structural_similarity(ty, py, data_range=255.0, **WANG))
    gx, gy = np.diff(py, axis=1), np.diff(py, axis=0)
    assert gradient_energy(pred, b) == float((gx**2).mean() + (gy**2).mean())


def test_rgb_figures_equal_the_former_translation_eval(pair) -> None:
    pred, target = pair
    assert psnr_rgb(pred, target) == float(peak_signal_noise_ratio(target, pred, data_range=1.0))
    assert ssim_rgb(pred, target) == float(structural_similarity(target, pred, data_range=1.0, channel_axis=2, **WANG))


def test_chw_figures_equal_the_former_attentive_gan(pair) -> None:
    pred, target = (np.ascontiguousarray(a.transpose(2, 0, 1)).astype(np.float32) for a in pair)
    pred = pred * np.float32(1.1) - np.float32(0.05)  # some values outside [0, 1], as a network gives
    p, t = np.clip(pred, 0.0, 1.0).transpose(1, 2, 0).astype(np.float64), target.transpose(1, 2, 0).astype(np.float64)
    old = (float(peak_signal_noise_ratio(t, p, data_range=1.0)),
           float(structural_similarity(t, p, data_range=1.0, channel_axis=2, **WANG)))
    p64, t64 = np.clip(pred, 0.0, 1.0).astype(np.float64), target.astype(np.float64)
    assert (psnr_rgb(p64, t64, channel_axis=0), ssim_rgb(p64, t64, channel_axis=0)) == old


def test_float32_figures_equal_the_former_face_aging(pair) -> None:
    a, b = (np.ascontiguousarray(x.transpose(2, 0, 1)).astype(np.float32) for x in pair)
    old_ssim = float(structural_similarity(a, b, data_range=1.0, channel_axis=0, **WANG))
    assert ssim_rgb(a, b, channel_axis=0) == old_ssim  # float32 pairs are measured in float32, as before

    def old_psnr(x: np.ndarray, y: np.ndarray) -> float:
        mse = float(np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))
        return min(60.0, 10.0 * np.log10(1.0 / max(mse, 1e-12)))

    assert psnr_rgb(a, b, channel_axis=0, cap=60.0) == old_psnr(a, b)
    assert psnr_rgb(b, b, channel_axis=0, cap=60.0) == old_psnr(b, b) == 60.0
    assert ssim_rgb(a, b.astype(np.float64), channel_axis=0) == float(
        structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1.0, channel_axis=0, **WANG))


def test_uint8_psnr_equals_the_former_codecs_benchmark() -> None:
    rng = np.random.default_rng(11)
    a = rng.integers(0, 256, (30, 31, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    assert psnr(a, b, data_range=255.0) == float(10.0 * np.log10(255.0**2 / mse))
    assert psnr(a, a, data_range=255.0) == math.inf


def test_reference_set_psnr_equals_the_former_quality_rule_to_the_last_bit_of_log10(pair) -> None:
    pred, target = (x.astype(np.float32) * 2 - 1 for x in pair)  # a [-1, 1] output, span 2
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    old = 10.0 * math.log10(2.0**2 / mse)  # core/quality.py took math.log10; numpy's log10 may differ by one ulp
    assert psnr(pred.ravel(), target.ravel(), 2.0) == pytest.approx(old, rel=1e-15)
    assert psnr(target, target, 2.0) == math.inf
