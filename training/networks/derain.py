"""Attentive GAN networks for raindrop removal (Qian et al., CVPR 2018): the attentive-recurrent network (residual
blocks and a ConvLSTM producing attention maps), the contextual autoencoder, and the attentive discriminator.

Widths here are compact (see the application's config for the differences from the paper); images are RGB in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.networks.registry import register_network

SPATIAL_MULTIPLE = 4  # two stride-2 stages in the autoencoder
DILATIONS = (2, 4, 8, 16)  # the paper's dilated convolutions at 1/4 resolution


class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, plus the identity, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al. 2015): gates from one 3x3 conv over [input, hidden]."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.gates = nn.Conv2d(in_channels + channels, 4 * channels, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class AttentiveRecurrentNet(nn.Module):
    """N time steps of [image, previous attention] -> conv, residual blocks, ConvLSTM -> attention map A_t.

    States start at zero and the first attention map at 0.5 everywhere (as in the paper). The states are built
    from the features' own shape, so the unrolled graph exports with dynamic height and width.
    """

    def __init__(self, channels: int = 16, blocks: int = 2, steps: int = 4) -> None:
        super().__init__()
        self.steps, self.channels = steps, channels
        self.head = nn.Sequential(nn.Conv2d(4, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.lstm = ConvLSTMCell(channels, channels)
        self.to_map = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        att = torch.full_like(image[:, :1], 0.5)
        h = c = None
        maps = []
        for _ in range(self.steps):
            x = self.blocks(self.head(torch.cat([image, att], dim=1)))
            if h is None or c is None:
                h = c = torch.zeros_like(x)
            h, c = self.lstm(x, h, c)
            att = torch.sigmoid(self.to_map(h))
            maps.append(att)
        return maps


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation), nn.ReLU())


class ContextualAutoencoder(nn.Module):
    """The paper's contextual autoencoder at reduced width: encoder to 1/4 size, dilated convs, decoder with skips.

    Input: image and attention map (4 channels). Outputs at 1/4, 1/2 and full size. With ``residual`` each
    output is a correction added to the (resized) input image, so training starts at "return the rainy image"
    instead of having to learn the identity (not in the paper; see AttentiveGANConfig).
    """

    def __init__(self, width: int = 24, residual: bool = True) -> None:
        super().__init__()
        w1, w2, w4 = width, 2 * width, 4 * width
        self.residual = residual
        self.enc1 = _conv(4, w1, 5)
        self.enc2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))
        self.enc4 = nn.Sequential(_conv(w2, w4, stride=2), _conv(w4, w4), _conv(w4, w4))
        self.context = nn.Sequential(*[_conv(w4, w4, dilation=d) for d in DILATIONS], _conv(w4, w4), _conv(w4, w4))
        self.out4 = nn.Conv2d(w4, 3, 3, padding=1)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(w4, w2, 4, 2, 1), nn.ReLU())
        self.dec2 = _conv(w2, w2)
        self.out2 = nn.Conv2d(w2, 3, 3, padding=1)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(w2, w1, 4, 2, 1), nn.ReLU())
        self.dec1 = _conv(w1, w1)
        self.out1 = nn.Conv2d(w1, 3, 3, padding=1)
        if residual:  # start near the identity: small corrections
            for head in (self.out4, self.out2, self.out1):
                with torch.no_grad():
                    head.weight.mul_(0.1)
                    head.bias.zero_()

    def forward(self, image: torch.Tensor, attention: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.enc1(torch.cat([image, attention], dim=1))
        f2 = self.enc2(f1)
        f4 = self.context(self.enc4(f2))
        d2 = self.dec2(self.up2(f4) + f2)  # skip connection at 1/2
        d1 = self.dec1(self.up1(d2) + f1)  # skip connection at full size
        outs = [self.out4(f4), self.out2(d2), self.out1(d1)]
        if self.residual:
            outs = [o + (image if o.shape[-1] == image.shape[-1] else F.avg_pool2d(image, image.shape[-1] // o.shape[-1]))
                    for o in outs]
        return outs


@register_network("attentive-generator")
class AttentiveGenerator(nn.Module):
    """Attentive-recurrent network + contextual autoencoder; ``forward`` returns (attention maps, outputs).

    Without ``attention`` (the L1 baseline) the autoencoder runs alone, its attention input fixed at 0.5.
    """

    spatial_multiple = SPATIAL_MULTIPLE

    def __init__(self, time_steps: int = 4, arn_channels: int = 12, arn_blocks: int = 2, ae_width: int = 24,
                 residual: bool = True, attention: bool = True) -> None:
        super().__init__()
        if time_steps < 1 or arn_blocks < 0 or min(arn_channels, ae_width) < 1:
            raise GanserveError("time_steps, arn_channels and ae_width must be >= 1 and arn_blocks >= 0")
        self.time_steps, self.arn_channels, self.arn_blocks = time_steps, arn_channels, arn_blocks
        self.ae_width = ae_width
        self.arn = AttentiveRecurrentNet(arn_channels, arn_blocks, time_steps) if attention else None
        self.autoencoder = ContextualAutoencoder(ae_width, residual)

    def receptive_radius(self) -> int:
        """Pixels of context on each side that one output pixel can see (upper bound, from the layer arithmetic).

        Autoencoder: 5x5 conv (2), 3x3 convs at strides 1/2/4 and the dilated ones at 1/4 scale, transposed convs
        (1.5 input pixels each); attentive net: (2 * blocks + 3) 3x3 convs per time step, the map fed back.
        """
        ae = 2 + 1 + 2 + 2 + 4 * 2 + sum(4 * d for d in DILATIONS) + 4 * 2 + 6 + 2 + 3 + 1 + 1
        arn = 0 if self.arn is None else self.time_steps * (2 * self.arn_blocks + 3)
        return ae + arn

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        kind = "autoencoder alone (L1 baseline)" if self.arn is None else (
            f"attentive-recurrent net {self.time_steps} steps x {self.arn_blocks} blocks x {self.arn_channels} ch "
            "+ ConvLSTM")
        return f"{kind}, contextual autoencoder width {self.ae_width}"

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        maps = self.arn(image) if self.arn is not None else [torch.full_like(image[:, :1], 0.5)]
        return maps, self.autoencoder(image, maps[-1])


@register_network("attentive-discriminator")
class AttentiveDiscriminator(nn.Module):
    """Seven 3x3 convs and two dense layers; after the fourth conv (1/4 size) a small head predicts an attention
    mask that multiplies the features the last three convs see. Returns (real/fake logits, mask)."""

    def __init__(self, channels: int = 16, hidden: int = 128) -> None:
        super().__init__()
        c = channels

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))

        self.early = nn.Sequential(block(3, c, 1), block(c, 2 * c, 2), block(2 * c, 2 * c, 1), block(2 * c, 4 * c, 2))
        self.mask_head = nn.Sequential(block(4 * c, 2 * c, 1), nn.Conv2d(2 * c, 1, 3, padding=1))
        self.late = nn.Sequential(block(4 * c, 4 * c, 2), block(4 * c, 8 * c, 2), block(8 * c, 8 * c, 1),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(8 * c, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.early(x)
        mask = torch.sigmoid(self.mask_head(features))
        return self.classifier(self.late(features * mask)).view(-1), mask
