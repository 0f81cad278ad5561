"""Held-out figures and crops shared by pix2pix and CycleGAN: L1, PSNR and SSIM on RGB, and sharpness.

Translation changes colour, so the figures are on RGB in [0, 1] (not on luma as for super-resolution). Held-out
images are centre-cropped to the generator's spatial multiple so no padding enters the figures.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ganserve.core.image_metrics import LUMA_WEIGHTS
from ganserve.core.image_metrics import colourfulness, psnr_rgb, sharpness_ratio, ssim_rgb  # noqa: F401 (re-exported)

# Maps a 1x3xHxW float32 array in [0, 1] to one of the same shape.
ArrayPredictor = Callable[[np.ndarray], np.ndarray]


def center_crop_multiple(img: np.ndarray, multiple: int) -> np.ndarray:
    """The centred HxW window of ``img`` (HxWxC) whose sides are the largest multiples of ``multiple``."""
    h, w = img.shape[:2]
    ch, cw = h - h % multiple, w - w % multiple
    if ch == 0 or cw == 0:
        raise ValueError(f"image {w}x{h} is smaller than the spatial multiple {multiple}")
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def to_batch(img: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 (or float in [0, 1]) -> 1x3xHxW float32 in [0, 1]."""
    arr = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def to_hwc(x: np.ndarray) -> np.ndarray:
    """1x3xHxW -> HxWx3 float64 clipped to [0, 1]."""
    return np.clip(np.asarray(x, dtype=np.float64)[0].transpose(1, 2, 0), 0.0, 1.0)


def image_figures(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """L1, PSNR (dB), SSIM (Wang et al.'s Gaussian settings, per channel) on RGB in [0, 1], and sharpness ratio."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    return {
        "l1": float(np.abs(pred - target).mean()),
        "psnr": psnr_rgb(pred, target, data_range=1.0),
        "ssim": ssim_rgb(pred, target, data_range=1.0),
        "sharpness": sharpness_ratio(pred, target, 0),
    }


def luma(image: np.ndarray) -> np.ndarray:
    """Full-range Rec. 601 luma of HxWx3 RGB (any scale): what a colouriser's grey input holds."""
    return np.asarray(image, dtype=np.float64) @ np.asarray(LUMA_WEIGHTS)


def luma_figures(pred: np.ndarray, given: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How a colouriser kept the light (HxWx3 in [0, 1]): PSNR of its luma against the truth's, and the largest
    difference in 8-bit grey levels between the luma of its 8-bit output and that of the input it was given."""
    levels = lambda x: np.round(np.clip(x, 0.0, 1.0) * 255.0)  # noqa: E731  (what the client receives)
    return {"luma_psnr": psnr_rgb(luma(pred), luma(truth), data_range=1.0),
            "luma_levels_max": float(np.max(np.abs(luma(levels(pred)) - luma(levels(given)))))}


def mean_figures(rows: list[dict[str, float]]) -> dict[str, float]:
    """Per-key mean over images."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def crop_boxes(shapes: list[tuple[int, int]], n: int, h: int, w: int) -> list[tuple[int, int, int]]:
    """(image index, y, x) of ``n`` deterministic h x w windows spread over images of the given (H, W)."""
    boxes = []
    for i in range(n):
        k = i % len(shapes)
        H, W = shapes[k]
        if H < h or W < w:
            raise ValueError(f"held-out image {k} ({W}x{H}) is smaller than a {w}x{h} crop")
        y = min(max((H - h) // 2 + 23 * i, 0), H - h)
        x = min(max((W - w) // 2 - 37 * i, 0), W - w)
        boxes.append((k, y, x))
    return boxes


def crops(images: list[np.ndarray], n: int, h: int, w: int) -> np.ndarray:
    """NCHW float32 [0, 1] batch of ``n`` deterministic crops from HxWx3 uint8 images (see ``crop_boxes``)."""
    boxes = crop_boxes([im.shape[:2] for im in images], n, h, w)
    return np.concatenate([to_batch(images[k][y : y + h, x : x + w]) for k, y, x in boxes], axis=0)


def uint8_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size`` x ``size`` window (or the whole side when smaller) of an HxWx3 image."""
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def grid_strength(pred: np.ndarray, target: np.ndarray, period: int = 4) -> float:
    """How strongly the error repeats on a fixed pixel grid, in grey levels (0..255): the error's luma is averaged
    over all pixels of each of the period x period phases (y mod p, x mod p), and the spread (std) of those p*p
    means is returned. Errors that do not depend on the pixel's position on the grid average out (near 0); the
    transposed-convolution checkerboard (a pattern of period 2 per stride-2 stage, 4 for two) does not."""
    err = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    luma = (err @ np.asarray(LUMA_WEIGHTS)) * 255.0
    h, w = luma.shape[0] - luma.shape[0] % period, luma.shape[1] - luma.shape[1] % period
    phases = luma[:h, :w].reshape(h // period, period, w // period, period).mean(axis=(0, 2))
    return float(phases.std())
