"""Image-quality figures and the float -> 8-bit rule, torch-free (numpy and scikit-image only).

Every figure the project reports comes from here: PSNR and SSIM on RGB (translation, deraining, face aging, the
precision gate) and on luma Y (super-resolution, as SR papers report), plus the sharpness ratio. Each function
names its data range, its border crop and its channel axis; SSIM always uses Wang et al.'s (2004) settings:
an 11x11 Gaussian window with sigma 1.5 and the population covariance, per channel and then averaged.

Precision: PSNR is computed in float64 whatever the input. SSIM runs in float32 when both images are float32 (what
the face-aging figures have always used) and in float64 otherwise; scikit-image filters in the input's precision,
so this keeps every recorded figure bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from skimage.metrics import structural_similarity

# ITU-R BT.601 for RGB in [0, 1] -> Y in [16, 235]: Y = 16 + 65.481 R + 128.553 G + 24.966 B.
Y_OFFSET = 16.0
Y_WEIGHTS = (65.481, 128.553, 24.966)
Y_RANGE = 255.0  # the data range SR papers use for Y (it spans 219 of it)
# BT.601 luma of RGB in any range (the weights sum to 1: three equal channels map to themselves).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# Wang et al.'s SSIM: Gaussian weights (11x11 window at truncate 3.5), sigma 1.5, population covariance.
SSIM_SETTINGS = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] -> uint8: clip to [0, 1], scale by 255, round half to even (np.rint).

    Why this rule: the server writes every reply with it (serving.imaging.to_pixels), so a picture or example made
    offline holds the bytes the server would send; it is numpy's and torch's own rounding; and it is exact, where
    adding 0.5 and truncating is not (in float32, 0.49999997 + 0.5 rounds up to 1.0). float32 input is computed in
    float32, as the server does; anything else (float64, integers, bool) in float64.
    """
    x = np.asarray(image)
    if x.dtype != np.float32:
        x = x.astype(np.float64)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def from_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit HxW or HxWxC pixels -> HxWx3 float64 in [0, 1] (grey repeated to three channels, alpha dropped)."""
    x = np.asarray(image, dtype=np.float64) / 255.0
    return np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x[..., :3]


def crop_border(image: np.ndarray, border: int, channel_axis: int | None = None) -> np.ndarray:
    """``image`` without ``border`` pixels on each side of its two spatial axes: the first two axes that are not
    ``channel_axis`` (so H and W of HxW, HxWxC and, with ``channel_axis=0``, CxHxW)."""
    if border <= 0:
        return image
    channel = None if channel_axis is None else channel_axis % image.ndim
    spatial = [a for a in range(image.ndim) if a != channel][:2]
    index = [slice(None)] * image.ndim
    for axis in spatial:
        index[axis] = slice(border, -border)
    return image[tuple(index)]


def psnr(pred: np.ndarray, target: np.ndarray, data_range: float, cap: float | None = None) -> float:
    """PSNR in dB over every value of two same-shaped arrays, 10 log10(range^2 / MSE), in float64.

    Equal arrays give inf, or ``cap`` when given (a cap keeps means finite when some cases are exact). The
    logarithm is numpy's, as scikit-image's PSNR takes it (math.log10 differs from it in the last bit)."""
    mse = float(np.mean((np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)) ** 2))
    value = math.inf if mse == 0 else float(10.0 * np.log10(float(data_range) ** 2 / mse))
    return value if cap is None else min(float(cap), value)


def psnr_rgb(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0, border: int = 0,
             channel_axis: int = -1, cap: float | None = None) -> float:
    """PSNR in dB over all channels of two colour images (HxWxC by default; ``channel_axis=0`` for CHW)."""
    return psnr(crop_border(np.asarray(pred), border, channel_axis), crop_border(np.asarray(target), border, channel_axis),
                data_range, cap)


def _ssim_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images in float32 when both are float32, else in float64 (see the module docstring)."""
    pred, target = np.asarray(pred), np.asarray(target)
    dtype = np.float32 if pred.dtype == np.float32 and target.dtype == np.float32 else np.float64
    return pred.astype(dtype, copy=False), target.astype(dtype, copy=False)


def ssim_rgb(pred: np.ndarray, target: np.ndarray, data_range: float = 1.0, border: int = 0,
             channel_axis: int = -1) -> float:
    """SSIM of two colour images: Wang et al.'s settings per channel, then the mean over channels."""
    pred, target = _ssim_pair(crop_border(np.asarray(pred), border, channel_axis),
                              crop_border(np.asarray(target), border, channel_axis))
    return float(structural_similarity(target, pred, data_range=data_range, channel_axis=channel_axis,
                                       **SSIM_SETTINGS))


def colourfulness(img: np.ndarray) -> float:
    """Hasler and Suesstrunk's (2003) colourfulness of an HxWx3 RGB image in [0, 1], on their 0..255 scale:
    sqrt(std_rg^2 + std_yb^2) + 0.3 * sqrt(mean_rg^2 + mean_yb^2), rg = R - G, yb = (R + G) / 2 - B.
    0 for a grey image; their scale calls ~33 "moderately", ~59 "quite" and ~82 "highly" colourful."""
    rgb = np.asarray(img, dtype=np.float64) * 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """HxWx3 RGB in [0, 1] -> luma Y in [16, 235] (ITU-R BT.601, the convention SR papers report on), float64."""
    x = np.asarray(image, dtype=np.float64)
    r, g, b = Y_WEIGHTS
    return Y_OFFSET + x[..., 0] * r + x[..., 1] * g + x[..., 2] * b


def psnr_y(pred: np.ndarray, target: np.ndarray, border: int = 0) -> float:
    """PSNR in dB on Y (data range 255) of two HxWx3 RGB images in [0, 1], ``border`` pixels cropped per side."""
    return psnr(crop_border(rgb_to_y(pred), border), crop_border(rgb_to_y(target), border), Y_RANGE)


def ssim_y(pred: np.ndarray, target: np.ndarray, border: int = 0) -> float:
    """SSIM on Y (data range 255, Wang et al.'s settings) of two HxWx3 RGB images in [0, 1], border cropped."""
    return float(structural_similarity(crop_border(rgb_to_y(target), border), crop_border(rgb_to_y(pred), border),
                                       data_range=Y_RANGE, **SSIM_SETTINGS))


def gradient_energy(image: np.ndarray, border: int = 0) -> float:
    """Mean squared finite-difference gradient of Y of an HxWx3 RGB image: higher is sharper (blur lowers it)."""
    y = crop_border(rgb_to_y(image), border)
    gx = np.diff(y, axis=1)
    gy = np.diff(y, axis=0)
    return float((gx**2).mean() + (gy**2).mean())


def sharpness_ratio(pred: np.ndarray, target: np.ndarray, border: int = 0) -> float:
    """Gradient energy of the output relative to the ground truth (1.0 = as sharp as the original)."""
    ref = gradient_energy(target, border)
    return gradient_energy(pred, border) / ref if ref > 0 else float("nan")
