"""DCGAN-style networks for the digit generative models (Radford et al. 2016): a conv decoder (latent -> logits
of an S x S grey image) and a conv encoder (image [+ condition planes] -> features -> a linear head), and a small
LeakyReLU MLP for latent-space generators and discriminators. S is 8, 16 or 32; images are in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ganserve.training.networks.registry import register_network


def _stages(size: int) -> int:
    return int(math.log2(size // 4))


@register_network("conv-decoder")
class ConvDecoder(nn.Module):
    """DCGAN generator: linear to 4x4 x (2^k * ch), k stride-2 transposed convs with BN + ReLU, 3x3 conv to logits."""

    def __init__(self, in_dim: int, channels: int, size: int) -> None:
        super().__init__()
        k = _stages(size)
        self.channels, self.size = channels, size
        self.top = channels * 2**k
        self.project = nn.Sequential(nn.Linear(in_dim, self.top * 16), nn.BatchNorm1d(self.top * 16), nn.ReLU())
        layers: list[nn.Module] = []
        c = self.top
        for _ in range(k):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def describe(self) -> str:
        """Sizes, as the model card's architecture states them."""
        return f"width {self.channels}, {self.size} px"

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits N x 1 x S x S (apply sigmoid for images in [0, 1])."""
        return self.body(self.project(z).view(z.shape[0], self.top, 4, 4))


@register_network("conv-encoder")
class ConvEncoder(nn.Module):
    """DCGAN discriminator trunk: stride-2 4x4 convs (LeakyReLU 0.2; BN after the first unless ``norm`` is off)
    down to 4x4, flattened to features, then a linear head of ``out_dim``. Extra input planes carry a condition."""

    def __init__(self, out_dim: int, channels: int, size: int, in_planes: int = 1, norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, c = in_planes, channels
        for i in range(_stages(size)):
            layers.append(nn.Conv2d(c_in, c, 4, 2, 1, bias=not (norm and i > 0)))
            if norm and i > 0:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.LeakyReLU(0.2))
            c_in, c = c, c * 2
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = c_in * 16
        self.head = nn.Linear(self.feature_dim, out_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened trunk output before the head (what feature matching compares)."""
        return self.trunk(x * 2.0 - 1.0 if x.shape[1] == 1 else torch.cat([x[:, :1] * 2.0 - 1.0, x[:, 1:]], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_network("mlp")
def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    """A LeakyReLU MLP (latent-space generators and discriminators)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.LeakyReLU(0.2)]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)
