"""Super-resolution networks (Ledig et al. 2017): the SRResNet generator and the SRGAN discriminator.

Every SR generator registered for the SR applications takes ``scale`` (the applications pass theirs) and keeps it
as ``.scale``; input and output are RGB NCHW, the output ``scale`` times larger.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.networks.registry import register_network


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity (the paper's B residual blocks)."""

    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            _norm(channels, batch_norm),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            _norm(channels, batch_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_network("srresnet")
class SRResNet(nn.Module):
    """The SRGAN generator: 9x9 head, residual blocks, long skip, PixelShuffle x2 stages, 9x9 tail.

    With ``bicubic_skip`` the network predicts a residual over the bicubic upscale of its input (a global skip, as
    in VDSR): it starts at the bicubic baseline instead of having to learn it, which matters on a 2-core budget.
    The paper's SRResNet has no such skip (``bicubic_skip=False``, the default).

    ``upsample`` chooses the upscaling end: ``paper`` (the default) is a 3x3 convolution + PixelShuffle(2) + PReLU
    per factor of 2, then a 9x9 convolution at the output size; ``subpixel`` is one 3x3 convolution to
    3 * scale**2 channels and PixelShuffle(scale) (Shi et al. 2016), which does all its work at the input size.
    At x4 the paper's end costs more than the residual body of a 12 x 48 network; ``subpixel`` moves that compute
    into the body (measured in docs/super-resolution.md).
    """

    UPSAMPLERS = ("paper", "subpixel")

    def __init__(self, scale: int = 4, blocks: int = 16, channels: int = 64, batch_norm: bool = True,
                 bicubic_skip: bool = False, upsample: str = "paper") -> None:
        super().__init__()
        self.scale, self.bicubic_skip, self.upsample_kind = scale, bicubic_skip, upsample
        self.blocks, self.channels, self.batch_norm = blocks, channels, batch_norm
        if scale not in (2, 4, 8):
            raise GanserveError(f"scale must be 2, 4 or 8, got {scale}")
        if blocks < 1 or channels < 1:
            raise GanserveError(f"blocks and channels must be positive (got {blocks}, {channels})")
        if upsample not in self.UPSAMPLERS:
            raise GanserveError(f"upsample must be one of {', '.join(self.UPSAMPLERS)}, got {upsample!r}")
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels, batch_norm) for _ in range(blocks)])
        self.body_tail = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm), _norm(channels, batch_norm)
        )
        ups: list[nn.Module] = []
        if upsample == "paper":
            for _ in range(int(math.log2(scale))):
                ups += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(channels)]
            last = nn.Conv2d(channels, 3, 9, padding=4)
            self.tail: nn.Module = last
        else:  # the output's convolution is the sub-pixel one itself: nothing runs at the output size
            last = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
            ups.append(last)
            self.tail = nn.PixelShuffle(scale)
        self.upsample = nn.Sequential(*ups)
        if bicubic_skip:  # start close to the bicubic baseline: a small residual
            with torch.no_grad():
                last.weight.mul_(0.1)
                last.bias.zero_()

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        norm = "batch norm" if self.batch_norm else "no batch norm"
        end = ", sub-pixel upsampling" if self.upsample_kind == "subpixel" else ""
        return f"SRResNet {self.blocks} blocks x {self.channels} channels, {norm}{end}, x{self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        out = self.tail(self.upsample(h + self.body_tail(self.body(h))))
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


@register_network("srgan-discriminator")
class SRDiscriminator(nn.Module):
    """The SRGAN discriminator: 8 conv layers (64..512 channels, strided every other), BN, LeakyReLU, 2 dense.

    An adaptive average pool to 6x6 (the paper's map size for 96x96 crops) lets it take any crop size.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        if channels < 1:
            raise GanserveError(f"discriminator channels must be positive, got {channels}")
        c = channels
        plan = [(c, 2), (2 * c, 1), (2 * c, 2), (4 * c, 1), (4 * c, 2), (8 * c, 1), (8 * c, 2)]
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        in_ch = c
        for out_ch, stride in plan:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * 36, 16 * c), nn.LeakyReLU(0.2, inplace=True), nn.Linear(16 * c, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).view(-1)
