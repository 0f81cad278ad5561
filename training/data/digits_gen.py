"""scikit-learn's 8x8 digits as grey images in [0, 1] for the generative models, with a fixed held-out split.

Digits are resized (bilinear, from 8 px) to 8, 16 or 32 px; the 30% stratified held-out split is never trained on
by the generative models or by the metric classifier, and is the real-data reference for the Frechet distance.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ganserve.core.errors import GanserveError

SIZES = (8, 16, 32)
CLASSES = 10
HELD_OUT_FRACTION = 0.3
SPLIT_SEED = 0
DESCRIPTION = "scikit-learn digits (1,797 8x8 images), stratified 30% held out (seed 0), bilinear to {size} px"


def check_size(size: int) -> int:
    """The image side if it is one the models support; a clear error otherwise."""
    if size not in SIZES:
        raise GanserveError(f"image_size must be one of {', '.join(map(str, SIZES))}, got {size}")
    return size


@functools.lru_cache(maxsize=None)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    return tuple(
        train_test_split(images, data.target.astype(np.int64), test_size=HELD_OUT_FRACTION,
                         stratify=data.target, random_state=SPLIT_SEED)
    )  # type: ignore[return-value]


@functools.lru_cache(maxsize=None)
def digits(size: int, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images N x 1 x size x size in [0, 1], labels N) of the ``train`` or ``test`` part (cached, do not modify)."""
    check_size(size)
    x_train, x_test, y_train, y_test = _split()
    if part not in ("train", "test"):
        raise ValueError(f"part must be train or test, got {part!r}")
    x, y = (x_train, y_train) if part == "train" else (x_test, y_test)
    images = torch.from_numpy(x)[:, None]
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return images.contiguous(), torch.from_numpy(y)


def batch(size: int, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n training images and labels drawn with replacement by ``generator`` (a pure function of its seed)."""
    images, labels = digits(size, "train")
    idx = torch.randint(0, images.shape[0], (n,), generator=generator)
    return images[idx], labels[idx]
