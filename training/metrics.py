"""Image-quality figures for super-resolution: PSNR/SSIM on the Y channel (border cropped) and sharpness."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """HxWx3 RGB in [0, 1] -> luma Y in [16, 235] (ITU-R BT.601, the convention SR papers report on)."""
    img = np.asarray(img, dtype=np.float64)
    return 16.0 + img[..., 0] * 65.481 + img[..., 1] * 128.553 + img[..., 2] * 24.966


def _crop(y: np.ndarray, border: int) -> np.ndarray:
    return y[border:-border, border:-border] if border > 0 else y


def psnr_y(pred: np.ndarray, target: np.ndarray, border: int) -> float:
    """PSNR in dB on Y (data range 255) with ``border`` pixels cropped on every side."""
    return float(peak_signal_noise_ratio(_crop(rgb_to_y(target), border), _crop(rgb_to_y(pred), border), data_range=255.0))


def ssim_y(pred: np.ndarray, target: np.ndarray, border: int) -> float:
    """SSIM on Y with Wang et al.'s settings (Gaussian 11x11, sigma 1.5, population covariance)."""
    return float(
        structural_similarity(
            _crop(rgb_to_y(target), border),
            _crop(rgb_to_y(pred), border),
            data_range=255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def gradient_energy(img: np.ndarray, border: int = 0) -> float:
    """Mean squared finite-difference gradient of Y: higher is sharper (blur lowers it)."""
    y = _crop(rgb_to_y(img), border)
    gx = np.diff(y, axis=1)
    gy = np.diff(y, axis=0)
    return float((gx**2).mean() + (gy**2).mean())


def sharpness_ratio(pred: np.ndarray, target: np.ndarray, border: int) -> float:
    """Gradient energy of the output relative to the ground truth (1.0 = as sharp as the original)."""
    ref = gradient_energy(target, border)
    return gradient_energy(pred, border) / ref if ref > 0 else float("nan")
