"""Super-resolution networks (Ledig et al. 2017): the SRResNet generator and the SRGAN discriminator.

Every SR generator registered for the SR applications takes ``scale`` (the applications pass theirs) and keeps it
as ``.scale``; input and output are RGB NCHW, the output ``scale`` times larger.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.networks.registry import register_network


CUBIC_A = -0.75  # the cubic convolution coefficient torch's (and ONNX Resize's default) bicubic uses


def _cubic(t: float) -> list[float]:
    """Keys' cubic convolution weights of the 4 taps around a sample at fraction t past the second one."""
    a = CUBIC_A

    def near(x: float) -> float:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_phases(scale: int) -> torch.Tensor:
    """(scale, 5): row p holds the weights output phase p of a `scale`x bicubic upsample (align_corners=False) gives
    to the input samples i-2 .. i+2, where output s*i + p sits at input coordinate i + (p + 0.5) / s - 0.5."""
    rows = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        offset = (p + 0.5) / scale - 0.5
        first = math.floor(offset)  # -1 or 0: the taps are first-1 .. first+2
        rows[p, first + 1 : first + 5] = torch.tensor(_cubic(offset - first), dtype=torch.float64)
    return rows


class BicubicUpsample(nn.Module):
    """F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False), written as what CPU runtimes run well:
    edge padding (torch clamps indices at the border), one depthwise 5x5 convolution giving the s*s output phases
    of every pixel, and a pixel shuffle. The same function up to float rounding (tests/training/test_sr_bicubic_skip.py);
    exported as Pad + Conv + DepthToSpace instead of a cubic Resize, which OpenVINO ran at a tenth of the speed
    (docs/int8.md). The kernel is a non-persistent buffer: checkpoints are unchanged."""

    def __init__(self, scale: int, channels: int = 3) -> None:
        super().__init__()
        self.scale, self.channels = scale, channels
        k = bicubic_phases(scale)
        kernel = torch.einsum("pa,qb->pqab", k, k).reshape(scale * scale, 1, 5, 5)
        self.register_buffer("kernel", kernel.repeat(channels, 1, 1, 1).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
        return F.pixel_shuffle(F.conv2d(padded, self.kernel.to(x.dtype), groups=self.channels), self.scale)


class PhaseTail(nn.Module):
    """conv(prelu(pixel_shuffle(y, r))) computed on y itself: the same function, fit for int8 kernels.

    A k x k convolution with few outputs (3 colours) at the output size leaves most of a VNNI kernel's 16 output
    lanes empty: SRResNet's 9 x 9 tail ran at 15 % of the int8 rate the body reaches and took 37 % of the 256²
    run (docs/int8.md). Each output pixel (r*i + p, r*j + q) reads y's pixels near (i, j), so the same sums are a
    convolution over y (C*r*r channels, before the shuffle) with O*r*r outputs, one per output phase, then a pixel
    shuffle. PReLU commutes with the shuffle once its slope is repeated per phase. Exact up to float rounding
    (tests/training/test_sr_bicubic_skip.py); built only for export, so checkpoints and training are unchanged."""

    def __init__(self, prelu: nn.PReLU, conv: nn.Conv2d, r: int) -> None:
        super().__init__()
        (kh, kw), (ph, pw) = conv.kernel_size, conv.padding
        if (conv.groups != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1) or prelu.num_parameters != conv.in_channels
                or 2 * ph != kh - 1 or 2 * pw != kw - 1):
            raise GanserveError("PhaseTail rewrites a plain stride-1, size-keeping convolution after a per-channel "
                                "PReLU only")
        c, o = conv.in_channels, conv.out_channels
        # output row r*i + p, tap dy reads shuffled row r*i + p + dy - ph = r*(i + a) + s: a spans -ceil(ph/r) ..
        # ceil(ph/r) for a size-keeping kernel, so the new convolution pads the same amount on both sides
        reach = (math.ceil(ph / r), math.ceil(pw / r))
        w = conv.weight.detach().double()
        kernel = torch.zeros(o * r * r, c * r * r, 2 * reach[0] + 1, 2 * reach[1] + 1, dtype=torch.float64)
        for p in range(r):
            for q in range(r):
                for dy in range(kh):
                    a, s_ = divmod(p + dy - ph, r)
                    for dx in range(kw):
                        b, t = divmod(q + dx - pw, r)
                        kernel[p * r + q :: r * r, s_ * r + t :: r * r, a + reach[0], b + reach[1]] += w[:, :, dy, dx]
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(o)
        self.r = r
        self.prelu = nn.PReLU(c * r * r)
        self.conv = nn.Conv2d(c * r * r, o * r * r, kernel.shape[2:], padding=reach)
        with torch.no_grad():
            self.prelu.weight.copy_(prelu.weight.detach().repeat_interleave(r * r))
            self.conv.weight.copy_(kernel.float())
            self.conv.bias.copy_(bias.repeat_interleave(r * r))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(self.prelu(y)), self.r)


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
        self.bicubic = BicubicUpsample(scale) if bicubic_skip else None
        if bicubic_skip:  # start close to the bicubic baseline: a small residual
            with torch.no_grad():
                last.weight.mul_(0.1)
                last.bias.zero_()

    def for_export(self) -> "SRResNet":
        """A copy computing the same function in the form the runtimes run well: the paper's last upsampling stage
        and 9 x 9 tail become one PhaseTail (nothing then runs at the output size but a shuffle)."""
        out = copy.deepcopy(self).eval()
        if self.upsample_kind != "paper":
            return out
        *stages, shuffle, prelu = list(out.upsample)
        out.upsample = nn.Sequential(*stages)
        out.tail = PhaseTail(prelu, out.tail, shuffle.upscale_factor)
        return out

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        norm = "batch norm" if self.batch_norm else "no batch norm"
        end = ", sub-pixel upsampling" if self.upsample_kind == "subpixel" else ""
        return f"SRResNet {self.blocks} blocks x {self.channels} channels, {norm}{end}, x{self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        out = self.tail(self.upsample(h + self.body_tail(self.body(h))))
        if self.bicubic is not None:
            out = out + self.bicubic(x)
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
