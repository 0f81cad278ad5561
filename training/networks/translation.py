"""Image-to-image networks shared by pix2pix and CycleGAN: U-Net and ResNet generators, the PatchGAN discriminator,
and the [0, 1] <-> [-1, 1] wrapper both export.

U-Net (Isola et al. 2017): ``depth`` stride-2 4x4 convolutions down to 1x1 for a ``2**depth`` input (depth 8 is the
paper's unet_256, 7 its unet_128), mirrored by transposed convolutions with skip connections; dropout 0.5 in the
three innermost decoder layers is the generator's noise. ResNet generator (Zhu et al. 2017, after Johnson et al.):
7x7 stem, two stride-2 convolutions, residual blocks (6 or 9), two transposed convolutions, 7x7 head, reflection
padding. PatchGAN: 4x4 convolutions, three stride-2 then two stride-1, a score per 70x70 patch with ``layers=3``.
Generators map [-1, 1] to [-1, 1] (tanh); the applications convert from and to [0, 1] at their edges.
"""

from __future__ import annotations

import math

import re
from typing import Any

import torch
from torch import nn
import torch.nn.functional as F

from ganserve.core.errors import GanserveError
from ganserve.core.image_metrics import LUMA_WEIGHTS
from ganserve.training.networks.layouts import (NORM_PARAMS, Format, ImportFailure, Reading, State, register_layout,
                                               shape, three_channels)
from ganserve.training.networks.registry import register_network

NORMS = ("instance", "batch", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Instance norm (per-image statistics, no affine, as both papers), batch norm, or nothing."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "none":
        return nn.Identity()
    raise GanserveError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


class UNetBlock(nn.Module):
    """One level of the U-Net: down conv, the inner levels, up conv, and the skip (concatenation) around them."""

    def __init__(self, outer: int, inner: int, sub: nn.Module | None, norm: str, dropout: float,
                 outermost: bool = False, in_channels: int | None = None, out_channels: int | None = None) -> None:
        super().__init__()
        self.outermost = outermost
        bias = norm != "batch"
        down_in = in_channels if outermost and in_channels else outer
        down = [nn.Conv2d(down_in, inner, 4, stride=2, padding=1, bias=bias)]
        if outermost:
            up_out = out_channels or outer
            self.model = nn.Sequential(*down, *([sub] if sub else []), nn.ReLU(True),
                                       nn.ConvTranspose2d(inner * 2, up_out, 4, stride=2, padding=1), nn.Tanh())
            return
        if sub is None:  # innermost: no norm at the 1x1 bottleneck
            layers = [nn.LeakyReLU(0.2, True), *down, nn.ReLU(True),
                      nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
        else:
            layers = [nn.LeakyReLU(0.2, True), *down, norm_layer(norm, inner), sub, nn.ReLU(True),
                      nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1, bias=bias), norm_layer(norm, outer)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


@register_network("unet")
class UNetGenerator(nn.Module):
    """pix2pix's U-Net: input H and W must be multiples of ``2**depth`` (the exported model's spatial multiple)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, depth: int = 8, ngf: int = 64,
                 max_mult: int = 8, norm: str = "batch", dropout: float = 0.5) -> None:
        super().__init__()
        if depth < 2 or ngf < 1 or max_mult < 1:
            raise GanserveError(f"U-Net needs depth >= 2, ngf >= 1, max_mult >= 1 (got {depth}, {ngf}, {max_mult})")
        self.depth, self.ngf, self.max_mult, self.norm = depth, ngf, max_mult, norm
        widths = [ngf * min(2**i, max_mult) for i in range(depth)]  # channels after each down conv
        block: nn.Module | None = None
        for level in range(depth - 1, 0, -1):  # innermost first
            # the three innermost decoder layers after the bottleneck carry dropout (the paper's noise)
            drop = dropout if (level < depth - 1 and level >= depth - 4) else 0.0
            block = UNetBlock(widths[level - 1], widths[level], block, norm, drop)
        self.model = UNetBlock(widths[0], widths[0], block, norm, 0.0, outermost=True,
                               in_channels=in_channels, out_channels=out_channels)

    @property
    def spatial_multiple(self) -> int:
        """Input height and width must be multiples of this (one halving per level)."""
        return 2**self.depth

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return (f"U-Net depth {self.depth} (multiple {self.spatial_multiple}), {self.ngf} filters "
                f"(cap x{self.max_mult}), {self.norm} norm")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class ResnetBlock(nn.Module):
    """Reflection-padded conv3x3 - norm - ReLU - conv3x3 - norm, plus the identity."""

    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        bias = norm != "batch"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


UPSAMPLE_MODES = ("transpose", "resize")


@register_network("resnet-generator")
class ResnetGenerator(nn.Module):
    """CycleGAN's generator: input H and W must be multiples of 4 (two stride-2 stages).

    With ``residual`` (not in the paper) the last convolution predicts a correction that is added to the input and
    clipped to [-1, 1], starting near the identity: instance norm discards each image's absolute colour levels, so
    without the skip the output's global tone comes from biases, not from the picture being translated.
    ``upsample``: ``transpose`` is the paper's stride-2 transposed convolution (3x3 kernel: uneven overlap, the
    checkerboard of Odena et al. 2016); ``resize`` enlarges x2 by nearest neighbour, then a reflection-padded 3x3
    convolution (every output pixel sees the same kernel, so no grid can come from the upsampling itself).
    """

    spatial_multiple = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, blocks: int = 9,
                 norm: str = "instance", residual: bool = False, upsample: str = "transpose") -> None:
        super().__init__()
        if blocks < 1 or ngf < 1:
            raise GanserveError(f"ResNet generator needs blocks >= 1 and ngf >= 1 (got {blocks}, {ngf})")
        if upsample not in UPSAMPLE_MODES:
            raise GanserveError(f"ResNet generator upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}")
        if residual and in_channels != out_channels:
            raise GanserveError(f"a residual generator needs as many output as input channels ({in_channels})")
        self.residual, self.ngf, self.blocks, self.norm, self.upsample = residual, ngf, blocks, norm, upsample
        bias = norm != "batch"
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7, bias=bias),
                                   norm_layer(norm, ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias), norm_layer(norm, ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, norm) for _ in range(blocks)]
        for _ in range(2):
            if upsample == "resize":
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                           nn.Conv2d(ch, ch // 2, 3, bias=bias)]
            else:
                layers += [nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)]
            layers += [norm_layer(norm, ch // 2), nn.ReLU(True)]
            ch //= 2
        last = nn.Conv2d(ch, out_channels, 7)
        layers += [nn.ReflectionPad2d(3), last]
        if residual:
            with torch.no_grad():  # small corrections at the start
                last.weight.mul_(0.1)
                last.bias.zero_()
        else:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return (f"ResNet generator {self.blocks} blocks x {self.ngf} filters, {self.norm} norm"
                + (", input + clipped correction" if self.residual else "")
                + (", resize-convolution upsampling" if self.upsample == "resize" else ""))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            return torch.clamp(x + self.model(x), -1.0, 1.0)
        return self.model(x)


@register_network("patchgan")
class PatchDiscriminator(nn.Module):
    """PatchGAN: a real/fake logit per overlapping patch (70x70 with ``layers=3``); no pooling, any input size."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, layers: int = 3, norm: str = "batch",
                 max_mult: int = 8) -> None:
        super().__init__()
        if layers < 1 or ndf < 1:
            raise GanserveError(f"PatchGAN needs layers >= 1 and ndf >= 1 (got {layers}, {ndf})")
        bias = norm != "batch"
        seq: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, layers + 1):
            out = ndf * min(2**i, max_mult)
            stride = 2 if i < layers else 1
            seq += [nn.Conv2d(ch, out, 4, stride=stride, padding=1, bias=bias), norm_layer(norm, out),
                    nn.LeakyReLU(0.2, True)]
            ch = out
        seq.append(nn.Conv2d(ch, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*seq)
        self.layers, self.ndf = layers, ndf

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return f"PatchGAN {self.layers} layers x {self.ndf}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @property
    def receptive_field(self) -> int:
        """Input pixels one output logit sees (70 for layers=3, as in the papers)."""
        convs = [m for m in self.model if isinstance(m, nn.Conv2d)]
        field = 1
        for conv in reversed(convs):
            field = (field - 1) * conv.stride[0] + conv.kernel_size[0]
        return field


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """NCHW RGB -> NCHW with three equal channels, each the Rec. 601 luma (in any range: the weights sum to 1)."""
    r, g, b = image[:, 0:1], image[:, 1:2], image[:, 2:3]
    luma = LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b
    return luma.expand(-1, 3, -1, -1)


def with_luma(rgb: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
    """``rgb``'s colour on ``grey``'s light, both NCHW in [0, 1] (``grey``: three equal channels, as to_grey gives).

    The colour offset d = rgb - Y(rgb) has zero luma (the Rec. 601 weights sum to 1), so grey + s * d has exactly
    ``grey``'s luma for any per-pixel s. s = 1 keeps ``rgb``'s Cb and Cr; where that would leave the RGB cube, s is
    the largest value that stays inside it, so the colour desaturates instead of the light being clipped."""
    d = rgb - to_grey(rgb)
    y = grey[:, :1]
    room = torch.where(d > 0, (1.0 - y) / d.clamp(min=1e-6), torch.where(d < 0, y / (-d).clamp(min=1e-6),
                                                                           torch.ones_like(d)))
    scale = room.amin(dim=1, keepdim=True).clamp(max=1.0)
    return grey + scale * d


class GaussianBlur(nn.Module):
    """Separable Gaussian blur per channel of an NCHW tensor (radius 3 sigma, edges replicated): two depthwise
    convolutions with fixed kernels (buffers outside the state dict), so it exports to ONNX as such."""

    def __init__(self, sigma: float, channels: int = 3) -> None:
        super().__init__()
        self.radius = max(1, int(math.ceil(3.0 * sigma)))
        t = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        k = torch.exp(-(t * t) / (2.0 * sigma * sigma))
        k = (k / k.sum()).repeat(channels, 1, 1, 1)  # (C, 1, 1, taps)
        self.register_buffer("row", k, persistent=False)
        self.register_buffer("col", k.transpose(2, 3).contiguous(), persistent=False)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.radius
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), self.row, groups=self.channels)
        return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), self.col, groups=self.channels)


class Translator(nn.Module):
    """What gets exported: RGB [0, 1] NCHW -> RGB [0, 1] NCHW through a [-1, 1] generator (eval mode, clamped).

    ``grey_input``: the generator sees the input's luma only (a colouriser: any photo, colour or grey, is
    reduced to its grey version first, as in training). ``keep_luma``: the output is the generator's colour on the
    input's own luma (with_luma), so a colouriser cannot repaint the photo's light; only float rounding and the
    client's 8-bit rounding move it. ``chroma_sigma`` (with keep_luma): the colour offset is low-passed by a Gaussian
    of that many pixels first, as chroma subsampling does, so pixel-level colour noise does not draw false
    structure on the photo."""

    def __init__(self, generator: nn.Module, grey_input: bool = False, keep_luma: bool = False,
                 chroma_sigma: float = 0.0) -> None:
        super().__init__()
        self.generator, self.grey_input, self.keep_luma = generator, grey_input, keep_luma
        self.blur = GaussianBlur(chroma_sigma) if keep_luma and chroma_sigma > 0 else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.grey_input:
            image = to_grey(image)
        out = ((self.generator(image * 2.0 - 1.0) + 1.0) * 0.5).clamp(0.0, 1.0)
        if self.keep_luma:
            grey = image if self.grey_input else to_grey(image)
            if self.blur is not None:  # the offset has zero luma, and so has its blur: grey + blur keeps grey's Y
                out = grey + self.blur(out - to_grey(out))
            out = with_luma(out, grey)
        return out


# -- pytorch-CycleGAN's weight layouts of these networks (ganserve import) --------------------------
def _norm_of(state: State, norm_key: str, conv_key: str) -> tuple[str, tuple[str, ...]]:
    """pytorch-CycleGAN norm from the first norm layer: batch (affine + running stats, convs without bias) or
    instance (no affine, no stats, convs with bias); stale instance-norm statistics of old files are dropped."""
    if f"{norm_key}.weight" in state and f"{norm_key}.running_mean" in state:
        if f"{conv_key}.bias" in state:
            raise ImportFailure(f"{conv_key} has a bias next to batch norm {norm_key}: not pytorch-CycleGAN's layout")
        return "batch", ()
    if f"{norm_key}.weight" in state:
        raise ImportFailure(f"{norm_key} has affine weights without running statistics: instance norm with affine "
                            "parameters is not pytorch-CycleGAN's default (--norm instance has none)")
    if f"{conv_key}.bias" not in state:
        raise ImportFailure(f"no norm parameters and no conv bias at {conv_key}: pytorch-CycleGAN's --norm none "
                            "layout, which ganserve's networks do not have")
    stale = tuple(k for k in state if re.search(r"\.(running_mean|running_var|num_batches_tracked)\Z", k))
    return "instance", stale


def _rename_cyclegan_resnet(state: State) -> State:
    """pytorch-CycleGAN's ResnetBlock ``conv_block`` is ganserve's ``body`` (same indices without dropout; with
    dropout, its conv/norm at 6/7 are ganserve's 5/6: dropout is identity at inference)."""
    dropout = any(re.match(r"model\.\d+\.conv_block\.6\.weight\Z", k) and v.ndim == 4 for k, v in state.items())
    moved = {"6": "5", "7": "6"} if dropout else {}
    out: State = {}
    for key, value in state.items():
        if (m := re.match(r"(model\.\d+)\.conv_block\.(\d+)\.(.+)\Z", key)):
            out[f"{m.group(1)}.body.{moved.get(m.group(2), m.group(2))}.{m.group(3)}"] = value
        else:
            out[key] = value
    return out


def _translation(spec: dict[str, Any], hyper: dict[str, Any], notes: list[str], drop: tuple[str, ...],
                 crop: int = 256) -> Reading:
    notes = [*notes, "inference in eval mode: batch norm uses the file's running statistics and dropout is off "
             "(pytorch-CycleGAN's test.py --eval); RGB in [-1, 1] inside, [0, 1] at the model's edges"]
    if drop:
        notes.append(f"{len(drop)} stale instance-norm statistics keys dropped (as pytorch-CycleGAN's loader does)")
    return Reading("pix2pix", {"generator": spec, "crop": crop}, hyper, notes=notes, drop=drop)


def _read_cyclegan_resnet(state: State) -> Reading:
    ngf, in_ch = shape(state, "model.1.weight", 4)[:2]
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.body\.", k))})
    if not blocks or blocks != list(range(10, 10 + len(blocks))):
        raise ImportFailure(f"residual blocks at model.{blocks[:3]}...; ResnetGenerator's run model.10 .. model.N")
    n = len(blocks)
    last = f"model.{17 + n}.weight"
    out_ch = shape(state, last, 4)[0]
    three_channels("this ResnetGenerator", in_ch, out_ch)
    norm, stale = _norm_of(state, "model.2", "model.1")
    spec = {"type": "resnet-generator", "ngf": ngf, "blocks": n, "norm": norm, "residual": False}
    hyper = {"ngf": ngf, "blocks": n, "norm": norm, "in_channels": in_ch, "out_channels": out_ch}
    return _translation(spec, hyper, [], stale)


# pytorch-CycleGAN's U-Net nests one block in the next: the outermost block's Sequential holds its child at index 1,
# every other block at index 3, so level L's keys start model.model. (L = 0), model.model.1.model. (L = 1),
# model.model.1.model.3.model. (L = 2), ...
_UNET_KEY = re.compile(r"model\.model(?:\.1\.model((?:\.3\.model)*))?\.(\d+)\.(\w+)\Z")


def _unet_prefix(level: int) -> str:
    return "model.model." + ("1.model." + "3.model." * (level - 1) if level else "")


def _read_pix2pix_unet(state: State) -> Reading:
    levels: dict[int, set[int]] = {}
    for key in state:
        if (m := _UNET_KEY.match(key)):
            level = 0 if m.group(1) is None else 1 + m.group(1).count(".3.model")
            levels.setdefault(level, set()).add(int(m.group(2)))
    depth = len(levels)
    if sorted(levels) != list(range(depth)) or depth < 2:
        raise ImportFailure(f"U-Net levels {sorted(levels)} are not nested 0..N")
    widths = []
    for level in range(depth):
        down = f"{_unet_prefix(level)}{0 if level == 0 else 1}.weight"
        widths.append(shape(state, down, 4)[0])
    in_ch = shape(state, f"{_unet_prefix(0)}0.weight", 4)[1]
    out_ch = shape(state, f"{_unet_prefix(0)}3.weight", 4)[1]  # ConvTranspose2d weights are [in, out, k, k]
    three_channels("this U-Net", in_ch, out_ch)
    ngf = widths[0]
    max_mult = max(widths) // ngf
    want = [ngf * min(2**i, max_mult) for i in range(depth)]
    if widths != want or max(widths) % ngf:
        raise ImportFailure(f"U-Net widths {widths} per level are not pix2pix's ngf x min(2^level, {max_mult}) = "
                            f"{want}")
    norm, stale = _norm_of(state, f"{_unet_prefix(1)}2", f"{_unet_prefix(0)}0")
    spec = {"type": "unet", "depth": depth, "ngf": ngf, "max_mult": max_mult, "norm": norm, "dropout": 0.5}
    hyper = {"depth": depth, "input_side": 2**depth, "ngf": ngf, "max_mult": max_mult, "norm": norm,
             "in_channels": in_ch, "out_channels": out_ch}
    return _translation(spec, hyper, [f"U-Net depth {depth}: input sides must be multiples of {2**depth} "
                                      f"(unet_{2**depth})"], stale, crop=max(256, 2**depth))


register_layout(Format(
    "cyclegan-resnet", "pytorch-CycleGAN-and-pix2pix ResnetGenerator (latest_net_G.pth, resnet_6blocks / _9blocks)",
    ("model.1.weight", "model.4.weight", "model.7.weight", "model.10.conv_block.1.weight"),
    (rf"model\.\d+\.({NORM_PARAMS})", rf"model\.\d+\.conv_block\.\d+\.({NORM_PARAMS})"),
    _read_cyclegan_resnet, _rename_cyclegan_resnet,
    "model.N.conv_block.j -> model.N.body.j (with dropout: conv_block.6/7 -> body.5/6); other keys as they are"))

register_layout(Format(
    "pix2pix-unet", "pytorch-CycleGAN-and-pix2pix UnetGenerator (latest_net_G.pth, unet_128 / unet_256)",
    ("model.model.0.weight", "model.model.1.model.1.weight", "model.model.3.weight"),
    (rf"model\.model(\.1\.model(\.3\.model)*)?\.\d+\.({NORM_PARAMS})",),
    _read_pix2pix_unet))
