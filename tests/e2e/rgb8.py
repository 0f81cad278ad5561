"""8-bit RGB pictures as the image API carries them, and the NCHW float tensors the models take (e2e helpers)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png(image: np.ndarray) -> bytes:
    """HxWx3 (or HxW) uint8 -> PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def nchw(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()


def to8(y: np.ndarray) -> np.ndarray:
    """The first picture of an NCHW [0, 1] batch as HxWx3 uint8."""
    return np.rint(np.clip(y[0], 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
