"""The 2-D ring of Gaussians used to compare adversarial objectives: K modes evenly spaced on a circle."""

from __future__ import annotations

import math

import torch

MODES = 8
RADIUS = 2.0
STD = 0.02


def ring_centers(modes: int = MODES, radius: float = RADIUS) -> torch.Tensor:
    """The K mode centres (K x 2), the first on the positive x axis, counter-clockwise."""
    angles = torch.arange(modes, dtype=torch.float64) * (2.0 * math.pi / modes)
    return torch.stack([radius * torch.cos(angles), radius * torch.sin(angles)], dim=1).float()


def sample_ring(
    n: int, generator: torch.Generator | None = None, modes: int = MODES, radius: float = RADIUS, std: float = STD
) -> torch.Tensor:
    """n points (n x 2): a uniformly chosen mode centre plus isotropic Gaussian noise of standard deviation std."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    which = torch.randint(0, modes, (n,), generator=generator)
    noise = torch.randn((n, 2), generator=generator) * std
    return ring_centers(modes, radius)[which] + noise
