"""Data sources (built-in split, user folders, crops, LR degradation) and PSNR/SSIM/sharpness figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ganserve.core.errors import GanserveError
from ganserve.core import image_metrics as metrics
from ganserve.training.data.images import (
    BUILTIN_HELD_OUT,
    BUILTIN_TRAIN,
    SRSource,
    downscale,
    load_builtin,
    scan_folder,
    step_generator,
    upscale_bicubic,
)
from ganserve.training.applications.sr_eval import evaluate_sr


def test_builtin_split_is_disjoint_and_covers_coffee_once() -> None:
    names = lambda entries: {e.split("[")[0] for e in entries}  # noqa: E731
    assert names(BUILTIN_TRAIN) & names(BUILTIN_HELD_OUT) == {"skimage:coffee"}
    assert "skimage:coffee[300:600]" in BUILTIN_TRAIN and "skimage:coffee[0:300]" in BUILTIN_HELD_OUT
    left, right = load_builtin("skimage:coffee[0:300]"), load_builtin("skimage:coffee[300:600]")
    full = load_builtin("skimage:coffee")
    assert left.shape == (400, 300, 3) and np.array_equal(np.concatenate([left, right], axis=1), full)
    logo = load_builtin("skimage:logo")
    assert logo.shape[2] == 3 and logo.dtype == np.uint8


def test_crops_are_seeded_and_lr_is_bicubic_downscale() -> None:
    img = (np.arange(64 * 80 * 3) % 251).astype(np.uint8).reshape(64, 80, 3)
    src = SRSource([img], scale=4, lr_patch=6)
    lr1, hr1 = src.batch(5, step_generator(3, 7, 0))
    lr2, hr2 = src.batch(5, step_generator(3, 7, 0))
    _, hr3 = src.batch(5, step_generator(3, 7, 1))
    assert hr1.shape == (5, 3, 24, 24) and lr1.shape == (5, 3, 6, 6)
    assert torch.equal(hr1, hr2) and torch.equal(lr1, lr2)
    assert not torch.equal(hr1, hr3)  # another rank draws other crops
    assert torch.allclose(lr1, downscale(hr1, 4))
    flat = torch.full((1, 3, 16, 16), 0.25)
    assert torch.allclose(downscale(flat, 4), torch.full((1, 3, 4, 4), 0.25), atol=1e-6)
    assert torch.allclose(upscale_bicubic(torch.full((1, 3, 4, 4), 0.25), 4), flat, atol=1e-6)


def test_user_folder_counts_skips_and_refuses_empty(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(tmp_path / "sub" / "b.JPG")
    Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    scan = scan_folder(tmp_path, min_size=32)
    assert (len(scan.images), scan.undecodable, scan.too_small, scan.files) == (2, 1, 1, 4)
    with pytest.raises(GanserveError, match="no such directory"):
        scan_folder(tmp_path / "missing", 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GanserveError, match="no images"):
        scan_folder(tmp_path / "empty", 32)
    with pytest.raises(GanserveError, match="none of 4 image files usable"):
        scan_folder(tmp_path, min_size=500)


def test_psnr_ssim_y_hand_computed() -> None:
    white, black = np.ones((4, 4, 3)), np.zeros((4, 4, 3))
    assert metrics.rgb_to_y(white)[0, 0] == pytest.approx(235.0, abs=1e-3)
    assert metrics.rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    target = np.full((16, 16, 3), 0.5)
    pred = target.copy()
    pred[..., :] += 10.0 / 219.0  # raises Y by exactly 10 on every pixel
    assert metrics.psnr_y(pred, target, border=2) == pytest.approx(20 * math.log10(255 / 10), rel=1e-9)
    rng = np.random.default_rng(0)
    img = rng.random((32, 32, 3))
    assert metrics.ssim_y(img, img, 4) == pytest.approx(1.0)
    assert metrics.sharpness_ratio(img, img, 4) == pytest.approx(1.0)
    assert metrics.sharpness_ratio(np.full_like(img, 0.3), img, 4) == 0.0


def test_bicubic_baseline_and_predictors_on_held_out() -> None:
    bicubic = lambda lr: upscale_bicubic(torch.from_numpy(lr), 4).numpy()  # noqa: E731
    res = evaluate_sr(bicubic, 4)
    assert res["eval_images"] == 2.0
    assert res["psnr_y"] == pytest.approx(res["bicubic_psnr_y"]) and res["psnr_gain_y"] == pytest.approx(0.0)
    assert 24.0 < res["bicubic_psnr_y"] < 34.0 and 0.6 < res["bicubic_ssim_y"] < 0.95
    assert 0.0 < res["bicubic_sharpness"] < 0.5  # bicubic x4 loses most of the gradient energy
    nearest = lambda lr: np.repeat(np.repeat(lr, 4, axis=2), 4, axis=3)  # noqa: E731
    worse = evaluate_sr(nearest, 4)
    assert worse["psnr_gain_y"] < -0.5
    with pytest.raises(ValueError, match="predictor returned"):
        evaluate_sr(lambda lr: lr, 4)
