"""Content losses: pixel losses by name, and MSE between VGG19 feature maps (SRGAN's) or a stated non-learned
fallback without weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Pixel losses by config name (SRResNet's MSE, as in the paper, or L1).
PIXEL_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical finite differences of an NCHW batch."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


class ContentLoss:
    """VGG19 feature MSE when a feature network is given; otherwise MSE of image gradients (fixed, not learned).

    ``mode`` says which one runs, so logs and checkpoints can state it; nothing silently uses random features.
    """

    def __init__(self, features: nn.Module | None) -> None:
        self.features = features
        self.mode = "vgg19" if features is not None else "image_gradients"

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        if self.features is not None:
            with torch.no_grad():
                target = self.features(hr)
            return F.mse_loss(self.features(sr), target)
        sx, sy = image_gradients(sr)
        hx, hy = image_gradients(hr)
        return F.mse_loss(sx, hx) + F.mse_loss(sy, hy)
