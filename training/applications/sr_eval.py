"""Held-out evaluation shared by the super-resolution applications (figures: ganserve.core.image_metrics)."""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np
import torch

from ganserve.core.image_metrics import psnr_y, sharpness_ratio, ssim_y
from ganserve.training.data.images import BUILTIN_HELD_OUT, downscale, held_out_images, to_tensor, upscale_bicubic

# Maps a 1x3xhxw float32 LR array in [0, 1] to a 1x3x(sh)x(sw) SR array.
ArrayPredictor = Callable[[np.ndarray], np.ndarray]


@functools.lru_cache(maxsize=4)
def held_out_pairs(scale: int, which: str = "headline") -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """(HR HxWx3 float in [0,1], LR 1x3xhxw float32) per photo of ``which`` set (the headline held-out pair or the
    evaluation set: images.EVAL_SETS), LR by antialiased bicubic downscaling."""
    pairs = []
    for img in held_out_images(scale, which):
        hr = to_tensor(img)
        lr = downscale(hr, scale)
        pairs.append((hr[0].permute(1, 2, 0).numpy().astype(np.float64), lr.numpy().astype(np.float32)))
    return tuple(pairs)


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.float64)[0].transpose(1, 2, 0), 0.0, 1.0)


def evaluate_sr(predict: ArrayPredictor, scale: int, which: str = "headline") -> dict[str, float]:
    """PSNR/SSIM on Y (border = scale) and sharpness of ``predict`` vs bicubic, averaged over ``which`` set's photos;
    the evaluation set adds the spread of the PSNR-Y gain over images (psnr_gain_y_sd, _min, _max)."""
    start = time.perf_counter()
    rows = []
    for hr, lr in held_out_pairs(scale, which):
        sr = _hwc(predict(lr))
        if sr.shape != hr.shape:
            raise ValueError(f"predictor returned {sr.shape[:2]} for LR {lr.shape[2:]}, want {hr.shape[:2]}")
        bic = _hwc(upscale_bicubic(torch.from_numpy(lr), scale).numpy())
        rows.append(
            {
                "psnr_y": psnr_y(sr, hr, scale),
                "ssim_y": ssim_y(sr, hr, scale),
                "sharpness": sharpness_ratio(sr, hr, scale),
                "bicubic_psnr_y": psnr_y(bic, hr, scale),
                "bicubic_ssim_y": ssim_y(bic, hr, scale),
                "bicubic_sharpness": sharpness_ratio(bic, hr, scale),
            }
        )
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out["psnr_gain_y"] = out["psnr_y"] - out["bicubic_psnr_y"]
    out["ssim_gain_y"] = out["ssim_y"] - out["bicubic_ssim_y"]
    if which != "headline":
        gains = np.array([r["psnr_y"] - r["bicubic_psnr_y"] for r in rows])
        out.update(psnr_gain_y_sd=float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
                   psnr_gain_y_min=float(gains.min()), psnr_gain_y_max=float(gains.max()))
    out["eval_images"] = float(len(rows))
    out["eval_seconds"] = time.perf_counter() - start
    return out


def _crop_boxes(scale: int, n: int, h: int, w: int) -> list[tuple[int, int, int]]:
    """(photo index, y, x) of ``n`` deterministic h x w LR crops spread over the held-out photos."""
    pairs = held_out_pairs(scale)
    boxes = []
    for i in range(n):
        H, W = pairs[i % len(pairs)][1].shape[2:]
        y = min(max((H - h) // 2 + 7 * i, 0), H - h)
        x = min(max((W - w) // 2 - 11 * i, 0), W - w)
        boxes.append((i % len(pairs), y, x))
    return boxes


def held_out_lr_crops(scale: int, sizes: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """Deterministic LR crops, one NCHW batch per (batch, h, w), from the held-out photos (parity, samples)."""
    pairs = held_out_pairs(scale)
    out = []
    for n, h, w in sizes:
        items = [pairs[k][1][0, :, y : y + h, x : x + w] for k, y, x in _crop_boxes(scale, n, h, w)]
        out.append(np.ascontiguousarray(np.stack(items)).astype(np.float32))
    return out


def held_out_hr_crops(scale: int, n: int, h: int, w: int) -> np.ndarray:
    """The HR regions (NCHW) that match ``held_out_lr_crops(scale, [(n, h, w)])``."""
    pairs = held_out_pairs(scale)
    items = [
        pairs[k][0][y * scale : (y + h) * scale, x * scale : (x + w) * scale].transpose(2, 0, 1)
        for k, y, x in _crop_boxes(scale, n, h, w)
    ]
    return np.stack(items).astype(np.float32)


HELD_OUT_DESCRIPTION = "held out (never trained on): " + ", ".join(BUILTIN_HELD_OUT)
