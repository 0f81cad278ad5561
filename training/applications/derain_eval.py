"""Held-out evaluation of raindrop removal: PSNR/SSIM of the output and of the rainy input against the clean
images, the attention map's IoU with the drop mask, and the picture grid of held-out rows."""

from __future__ import annotations

import functools
import time
from typing import Callable

import numpy as np

from ganserve.core.image_metrics import psnr_rgb, ssim_rgb
from ganserve.core.pictures import picture_grid
from ganserve.training.data.images import BUILTIN_HELD_OUT
from ganserve.training.data.raindrops import HELD_OUT_COUNT, HELD_OUT_CROP, held_out_pairs, stack_pairs

# Maps a NCHW float32 rainy batch in [0, 1] to (derained batch, final attention map or None).
Predict = Callable[[np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
HELD_OUT_DESCRIPTION = (f"held out (never trained on): {HELD_OUT_COUNT} crops of {HELD_OUT_CROP}x{HELD_OUT_CROP} from "
                        + ", ".join(BUILTIN_HELD_OUT) + " with drops rendered from fixed seeds")


@functools.lru_cache(maxsize=1)
def _held_out() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rainy, clean, mask = stack_pairs(held_out_pairs())
    return rainy.numpy(), clean.numpy(), mask.numpy()


def _psnr_ssim(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """PSNR (dB, RGB, data range 1) and SSIM (RGB mean; Gaussian 11x11, sigma 1.5) of two CHW images."""
    p, t = np.clip(pred, 0.0, 1.0).astype(np.float64), truth.astype(np.float64)
    return psnr_rgb(p, t, channel_axis=0), ssim_rgb(p, t, channel_axis=0)


def evaluate_derain(predict: Predict) -> dict[str, float]:
    """Mean PSNR/SSIM of ``predict``'s output and of the rainy input against the clean held-out images;
    with an attention map, its IoU (map > 0.5) with the drop mask."""
    start = time.perf_counter()
    rainy, clean, mask = _held_out()
    out, att = predict(rainy)
    if out.shape != clean.shape:
        raise ValueError(f"predictor returned {out.shape} for {rainy.shape}")
    rows = [(*_psnr_ssim(out[i], clean[i]), *_psnr_ssim(rainy[i], clean[i])) for i in range(len(clean))]
    psnr, ssim, rain_psnr, rain_ssim = (float(np.mean(col)) for col in zip(*rows))
    result = {"psnr": psnr, "ssim": ssim, "rainy_psnr": rain_psnr, "rainy_ssim": rain_ssim,
              "psnr_gain": psnr - rain_psnr, "ssim_gain": ssim - rain_ssim}
    if att is not None:
        hit, truth = att > 0.5, mask > 0.5
        result["attention_iou"] = float((hit & truth).sum() / max((hit | truth).sum(), 1))
    result["eval_images"] = float(len(rows))
    result["eval_seconds"] = time.perf_counter() - start
    return result


def derain_grid(predict: Predict, count: int = 4) -> np.ndarray:
    """Held-out rows of rainy | attention map (grey; blank without one) | output | clean, as HxWx3 uint8."""
    rainy, clean, _ = (a[:count] for a in _held_out())
    out, att = predict(rainy)
    att_rgb = np.repeat(att, 3, axis=1) if att is not None else np.ones_like(rainy)
    return picture_grid([rainy, att_rgb, np.clip(out, 0.0, 1.0), clean])
