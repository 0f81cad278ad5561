"""Semi-supervised GAN networks (Salimans et al. 2016): weight-normalised layers with data-dependent
initialisation, the K-class discriminators (the paper's MNIST MLP and its CIFAR-10 CNN scaled to 8x8 digits) and
the MLP generator. Discriminators return (K logits, features); the features are what feature matching compares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.networks.registry import register_network


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode only (the paper's regulariser on the discriminator's layers)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + self.std * torch.randn_like(x)
        return x


@torch.no_grad()
def _normalising_init(layer: nn.Module, unit_outputs: torch.Tensor) -> None:
    """Set a weight-norm layer's g and bias so its outputs, (units, samples) before g and bias, get mean 0, std 1."""
    mean, std = unit_outputs.mean(dim=1), unit_outputs.std(dim=1) + 1e-6
    layer.g.copy_(1.0 / std)
    layer.bias.copy_(-mean / std)


class WNLinear(nn.Module):
    """Weight-normalised dense layer, w = g * v / ||v|| per output unit (Salimans & Kingma 2016)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_features, in_features) * 0.05)
        self.g = nn.Parameter(torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def weight(self) -> torch.Tensor:
        return self.g[:, None] * self.v / self.v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Data-dependent init: pick g and b so this layer's outputs on ``x`` have mean 0 and std 1 per unit."""
        _normalising_init(self, F.linear(x, self.v / self.v.norm(dim=1, keepdim=True)).T)


def parse_widths(text: str | Sequence[int], what: str) -> list[int]:
    """'500,250,250' (or [500, 250, 250]) -> [500, 250, 250]; a clear error for anything else."""
    try:
        if isinstance(text, str):
            widths = [int(part) for part in text.split(",") if part.strip()]
        else:
            widths = [int(w) for w in text]
    except (TypeError, ValueError) as exc:
        raise GanserveError(f"{what} must be comma-separated positive integers, got {text!r}") from exc
    if not widths or min(widths) < 1:
        raise GanserveError(f"{what} must be comma-separated positive integers, got {text!r}")
    return widths


def _check_noise(**levels: float) -> None:
    bad = [k for k, v in levels.items() if v < 0]
    if bad:
        raise GanserveError(f"{' and '.join(bad)} must be >= 0")


@register_network("ssgan-mlp")
class Discriminator(nn.Module):
    """Noise -> [weight-norm dense -> ReLU -> noise] x L -> weight-norm dense to K logits; also returns features.

    The features (the last hidden layer, before its noise) are what the generator's feature matching compares.
    """

    def __init__(self, in_features: int, widths: Sequence[int] = (500, 250, 250), classes: int = 10,
                 input_noise: float = 0.3, hidden_noise: float = 0.5) -> None:
        super().__init__()
        widths = parse_widths(widths, "classifier widths")
        _check_noise(input_noise=input_noise, hidden_noise=hidden_noise)
        self.widths, self.classes = widths, classes
        self.input_noise = GaussianNoise(input_noise)
        dims = [in_features, *widths]
        self.hidden = nn.ModuleList(WNLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.noise = nn.ModuleList(GaussianNoise(hidden_noise) for _ in widths)
        self.head = WNLinear(widths[-1], classes)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return f"classifier MLP, units {','.join(map(str, self.widths))} (weight norm) -> {self.classes} logits"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_noise(x.flatten(1))
        features = h
        for layer, noise in zip(self.hidden, self.noise):
            features = F.relu(layer(h))
            h = noise(features)
        return self.head(h), features

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Data-dependent weight-norm init, layer by layer on one batch (noise off)."""
        h = x.flatten(1)
        for layer in self.hidden:
            layer.init_from(h)
            h = F.relu(layer(h))
        self.head.init_from(h)


class WNConv2d(nn.Module):
    """Weight-normalised 3x3 (or 1x1) convolution, w = g * v / ||v|| per output channel, with data-dependent init."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel) * 0.05)
        self.g = nn.Parameter(torch.ones(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride, self.padding = stride, kernel // 2

    def _direction(self) -> torch.Tensor:
        return self.v / self.v.flatten(1).norm(dim=1)[:, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.g[:, None, None, None] * self._direction()
        return F.conv2d(x, weight, self.bias, stride=self.stride, padding=self.padding)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Pick g and b so this layer's outputs on ``x`` have mean 0 and std 1 per channel."""
        t = F.conv2d(x, self._direction(), stride=self.stride, padding=self.padding)
        _normalising_init(self, t.transpose(0, 1).flatten(1))


@register_network("ssgan-conv")
class ConvDiscriminator(nn.Module):
    """The paper's CIFAR-10 discriminator scaled to 8x8 digits (``d_arch: conv``): input noise, then per width
    two 3x3 weight-norm convolutions and a strided one (leaky ReLU, dropout after each stage), a 1x1 (NiN) layer,
    global average pooling (the features feature matching compares) and a weight-norm dense layer to K logits."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (500, 250, 250), classes: int = 10,
                 input_noise: float = 0.3, dropout: float = 0.5) -> None:
        super().__init__()
        widths = parse_widths(widths, "classifier widths")
        _check_noise(input_noise=input_noise)
        if not 0.0 <= dropout < 1.0:
            raise GanserveError(f"dropout must be in [0, 1), got {dropout}")
        self.widths, self.classes = widths, classes
        self.input_noise = GaussianNoise(input_noise)
        layers: list[WNConv2d] = []
        channels = in_channels
        for width in widths:
            layers += [WNConv2d(channels, width), WNConv2d(width, width), WNConv2d(width, width, stride=2)]
            channels = width
        layers.append(WNConv2d(channels, channels, kernel=1))
        self.convs = nn.ModuleList(layers)
        self.drop_after = {3 * (i + 1) - 1 for i in range(len(widths))}  # indices of the strided convolutions
        self.dropout = nn.Dropout(dropout)
        self.head = WNLinear(channels, classes)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return f"classifier CNN, channels {','.join(map(str, self.widths))} (weight norm) -> {self.classes} logits"

    def _features(self, x: torch.Tensor, init: bool = False) -> torch.Tensor:
        h = self.input_noise(x)
        for i, conv in enumerate(self.convs):
            if init:
                conv.init_from(h)
            h = F.leaky_relu(conv(h), 0.2)
            if i in self.drop_after:
                h = self.dropout(h)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._features(x)
        return self.head(features), features

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Data-dependent weight-norm init, layer by layer on one batch (noise and dropout off)."""
        was_training = self.training
        self.eval()
        try:
            self.head.init_from(self._features(x, init=True))
        finally:
            self.train(was_training)


@register_network("ssgan-generator")
class Generator(nn.Module):
    """z -> [dense -> batch norm -> softplus] x L -> weight-norm dense -> sigmoid, shaped as (N, 1, H, W)."""

    def __init__(self, z_dim: int, widths: Sequence[int] = (500, 500), shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__()
        widths = parse_widths(widths, "generator widths")
        if z_dim < 1:
            raise GanserveError(f"z_dim must be >= 1, got {z_dim}")
        self.shape = tuple(shape)
        dims = [z_dim, *widths]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.Softplus()]
        self.body = nn.Sequential(*layers)
        self.out = WNLinear(widths[-1], int(np.prod(shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.body(z))).view(-1, *self.shape)

    @torch.no_grad()
    def init_from(self, z: torch.Tensor) -> None:
        """Data-dependent init of the weight-normalised output layer on one batch of latents."""
        self.out.init_from(self.body(z))
