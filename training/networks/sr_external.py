"""The SR networks that published pretrained weights use, with module names that give the published state-dict keys.

- ``rrdbnet``: ESRGAN's generator (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative Adversarial
  Networks"): residual-in-residual dense blocks without batch norm, nearest-neighbour upsampling; at x2 and x1 the
  input is first pixel-unshuffled (Real-ESRGAN, Wang et al. 2021), so its sides must be multiples of 2 / 4.
- ``srvgg-compact``: Real-ESRGAN's compact VGG-style network (convolutions at LR, one pixel shuffle, plus the
  nearest-neighbour upscale of the input).
- ``msrresnet``: SRResNet (Ledig et al. 2017) without batch norm, predicting a residual over the bilinear upscale.
- ``edsr``: EDSR (Lim et al. 2017): residual blocks without batch norm (optionally scaled), mean shift in and out.

The key layouts (names and shapes) are those of the BasicSR / Real-ESRGAN weight files, so such a file loads with
``load_state_dict(..., strict=True)``. Every network takes RGB NCHW in [0, 1] and returns RGB NCHW in the [0, 1]
range ``scale`` times larger, unclamped as the originals (the SR applications clamp). None takes statistics over the
whole image, so tiled inference is exact (``tile_safe``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.networks.layouts import (Format, ImportFailure, Reading, State, indices, register_layout,
                                               shape, sr_reading, three_channels)
from ganserve.training.networks.registry import register_network


def _conv3(in_ch: int, out_ch: int) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1)


def _small_init(modules: Sequence[nn.Module], factor: float) -> None:
    """Kaiming-normal weights scaled by ``factor``, zero biases: residual branches start near the identity
    (ESRGAN's "smaller initialisation")."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.0, mode="fan_in", nonlinearity="relu")
                m.weight.data.mul_(factor)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def _positive(network: str, **values: int) -> None:
    bad = {k: v for k, v in values.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
    if bad:
        raise GanserveError(f"{network}: must be positive integers: " + ", ".join(f"{k}={v!r}" for k, v in bad.items()))


# -- ESRGAN ---------------------------------------------------------------------------------------------------------
class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output (dense), LeakyReLU 0.2 after the first
    four; output ``x + 0.2 * conv5``."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        nf, gc = num_feat, num_grow_ch
        self.conv1 = _conv3(nf, gc)
        self.conv2 = _conv3(nf + gc, gc)
        self.conv3 = _conv3(nf + 2 * gc, gc)
        self.conv4 = _conv3(nf + 3 * gc, gc)
        self.conv5 = _conv3(nf + 4 * gc, nf)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + 0.2 * x5


class RRDB(nn.Module):
    """Residual in residual dense block: three dense blocks in a row, output ``x + 0.2 * out``."""

    def __init__(self, num_feat: int = 64, num_grow_ch: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


# How far RRDBNet pixel-unshuffles its input at each scale (the body always upsamples x4).
_UNSHUFFLE = {4: 1, 2: 2, 1: 4}


@register_network("rrdbnet")
class RRDBNet(nn.Module):
    """ESRGAN's RRDBNet (BasicSR / Real-ESRGAN layout): ``conv_first``, ``body.{i}.rdb{1,2,3}.conv{1..5}``,
    ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``.

    The body always upsamples x4 (two nearest-neighbour x2 steps); for x2 / x1 the input is pixel-unshuffled by 2 / 4
    first (``conv_first`` takes ``num_in_ch * 4`` / ``* 16`` channels), so input sides must be multiples of
    ``spatial_multiple`` (2 / 4).
    """

    tile_safe = True

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 23, num_grow_ch: int = 32) -> None:
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise GanserveError(f"rrdbnet: scale must be 1, 2 or 4, got {scale}")
        _positive("rrdbnet", num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=num_block,
                  num_grow_ch=num_grow_ch)
        self.scale = scale
        self.num_feat, self.num_block, self.num_grow_ch = num_feat, num_block, num_grow_ch
        self.unshuffle = _UNSHUFFLE[scale]
        self.spatial_multiple = self.unshuffle
        self.conv_first = _conv3(num_in_ch * self.unshuffle ** 2, num_feat)
        self.body = nn.Sequential(*[RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = _conv3(num_feat, num_feat)
        self.conv_up1 = _conv3(num_feat, num_feat)
        self.conv_up2 = _conv3(num_feat, num_feat)
        self.conv_hr = _conv3(num_feat, num_feat)
        self.conv_last = _conv3(num_feat, num_out_ch)
        self.lrelu = nn.LeakyReLU(0.2)
        _small_init(list(self.body), 0.1)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        unshuffle = f", pixel-unshuffle {self.unshuffle}" if self.unshuffle > 1 else ""
        return (f"RRDBNet (ESRGAN) {self.num_block} RRDB x {self.num_feat} features, growth {self.num_grow_ch}"
                f"{unshuffle}, x{self.scale}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = F.pixel_unshuffle(x, self.unshuffle) if self.unshuffle > 1 else x
        feat = self.conv_first(feat)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


# -- Real-ESRGAN compact ----------------------------------------------------------------------------------------------
_ACTIVATIONS = ("prelu", "relu", "leakyrelu")


@register_network("srvgg-compact")
class SRVGGNetCompact(nn.Module):
    """Real-ESRGAN's SRVGGNetCompact: ``body`` = [conv(in->feat), act, num_conv x (conv(feat->feat), act),
    conv(feat->out*scale^2)] at LR, pixel shuffle, plus the nearest-neighbour upscale of the input.

    ``act_type``: ``prelu`` (one slope per feature, ``body.{odd}.weight``), ``relu`` or ``leakyrelu`` (slope 0.1).
    """

    tile_safe = True

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_conv: int = 16, act_type: str = "prelu") -> None:
        super().__init__()
        _positive("srvgg-compact", scale=scale, num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat)
        if not isinstance(num_conv, int) or num_conv < 0:
            raise GanserveError(f"srvgg-compact: num_conv must be a non-negative integer, got {num_conv!r}")
        if act_type not in _ACTIVATIONS:
            raise GanserveError(f"srvgg-compact: act_type must be one of {', '.join(_ACTIVATIONS)}, got {act_type!r}")
        if num_in_ch != num_out_ch:
            raise GanserveError(f"srvgg-compact: the input's upscale is added to the output, so num_in_ch "
                                f"({num_in_ch}) must equal num_out_ch ({num_out_ch})")
        self.scale = scale
        self.num_feat, self.num_conv, self.act_type = num_feat, num_conv, act_type
        layers: list[nn.Module] = [_conv3(num_in_ch, num_feat), self._activation()]
        for _ in range(num_conv):
            layers += [_conv3(num_feat, num_feat), self._activation()]
        layers.append(_conv3(num_feat, num_out_ch * scale * scale))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(scale)

    def _activation(self) -> nn.Module:
        if self.act_type == "prelu":
            return nn.PReLU(num_parameters=self.num_feat)
        if self.act_type == "relu":
            return nn.ReLU()
        return nn.LeakyReLU(0.1)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return (f"SRVGGNetCompact (Real-ESRGAN) {self.num_conv} convs x {self.num_feat} features, {self.act_type}, "
                f"x{self.scale}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        return self.upsampler(out) + F.interpolate(x, scale_factor=float(self.scale), mode="nearest")


# -- SRResNet without batch norm, EDSR --------------------------------------------------------------------------------
class ResidualBlockNoBN(nn.Module):
    """conv3x3 - ReLU - conv3x3, scaled by ``res_scale``, plus the identity."""

    def __init__(self, num_feat: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = _conv3(num_feat, num_feat)
        self.conv2 = _conv3(num_feat, num_feat)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return x + out * self.res_scale if self.res_scale != 1.0 else x + out


@register_network("msrresnet")
class MSRResNet(nn.Module):
    """BasicSR's MSRResNet: SRResNet without batch norm, predicting a residual over the bilinear upscale.

    ``conv_first``, ``body.{i}.conv1/conv2``, ``upconv1`` (x2, x3: feat -> feat*scale^2, pixel shuffle by the scale;
    x4: feat -> 4feat, pixel shuffle 2) and at x4 ``upconv2`` (the same again), ``conv_hr``, ``conv_last``;
    LeakyReLU 0.1 after ``conv_first``, each pixel shuffle and ``conv_hr``.
    """

    tile_safe = True

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 16) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise GanserveError(f"msrresnet: scale must be 2, 3 or 4, got {scale}")
        _positive("msrresnet", num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat, num_block=num_block)
        if num_in_ch != num_out_ch:
            raise GanserveError(f"msrresnet: the input's upscale is added to the output, so num_in_ch "
                                f"({num_in_ch}) must equal num_out_ch ({num_out_ch})")
        self.scale, self.num_feat, self.num_block = scale, num_feat, num_block
        self.conv_first = _conv3(num_in_ch, num_feat)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)])
        if scale == 4:
            self.upconv1 = _conv3(num_feat, num_feat * 4)
            self.upconv2 = _conv3(num_feat, num_feat * 4)
            self.shuffles = (2, 2)
        else:
            self.upconv1 = _conv3(num_feat, num_feat * scale * scale)
            self.shuffles = (scale,)
        self.conv_hr = _conv3(num_feat, num_feat)
        self.conv_last = _conv3(num_feat, num_out_ch)
        self.lrelu = nn.LeakyReLU(0.1)
        _small_init(list(self.body), 0.1)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        return f"MSRResNet (SRResNet, no batch norm) {self.num_block} blocks x {self.num_feat} features, x{self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(self.lrelu(self.conv_first(x)))
        ups = [self.upconv1, self.upconv2] if self.scale == 4 else [self.upconv1]
        for conv, factor in zip(ups, self.shuffles):
            out = self.lrelu(F.pixel_shuffle(conv(out), factor))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(x, scale_factor=float(self.scale), mode="bilinear", align_corners=False)


def _rgb_mean(value: Sequence[float] | str) -> tuple[float, ...]:
    parts = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise GanserveError(f"edsr: rgb_mean must be numbers (e.g. 0.4488,0.4371,0.4040), got {value!r}") from exc


@register_network("edsr")
class EDSR(nn.Module):
    """BasicSR's EDSR: mean shift and ``img_range`` scaling, ``conv_first``, ``body.{i}.conv1/conv2`` (residual blocks
    scaled by ``res_scale``), ``conv_after_body`` plus the long skip, ``upsample`` (x2^n: n x [conv feat -> 4feat,
    PixelShuffle(2)]; x3: [conv feat -> 9feat, PixelShuffle(3)]), ``conv_last``, then the shift back.

    The mean is a non-persistent buffer: it follows the module's device and dtype but is not in the state dict.
    """

    tile_safe = True

    def __init__(self, scale: int = 4, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64,
                 num_block: int = 16, res_scale: float = 1.0, img_range: float = 255.0,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040)) -> None:
        super().__init__()
        _positive("edsr", scale=scale, num_in_ch=num_in_ch, num_out_ch=num_out_ch, num_feat=num_feat,
                  num_block=num_block)
        if scale != 3 and (scale & (scale - 1)):
            raise GanserveError(f"edsr: scale must be a power of two or 3, got {scale}")
        mean = _rgb_mean(rgb_mean)
        if len(mean) not in (1, num_in_ch) or len(mean) not in (1, num_out_ch):
            raise GanserveError(f"edsr: rgb_mean has {len(mean)} values for {num_in_ch} input / {num_out_ch} output "
                                f"channels")
        if not img_range > 0:
            raise GanserveError(f"edsr: img_range must be positive, got {img_range}")
        self.scale, self.num_feat, self.num_block = scale, num_feat, num_block
        self.res_scale, self.img_range = float(res_scale), float(img_range)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.conv_first = _conv3(num_in_ch, num_feat)
        self.body = nn.Sequential(*[ResidualBlockNoBN(num_feat, self.res_scale) for _ in range(num_block)])
        self.conv_after_body = _conv3(num_feat, num_feat)
        ups: list[nn.Module] = []
        if scale == 3:
            ups += [_conv3(num_feat, num_feat * 9), nn.PixelShuffle(3)]
        else:
            for _ in range(int(math.log2(scale))):
                ups += [_conv3(num_feat, num_feat * 4), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*ups)
        self.conv_last = _conv3(num_feat, num_out_ch)

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        scaled = f", residual scale {self.res_scale:g}" if self.res_scale != 1.0 else ""
        return f"EDSR {self.num_block} blocks x {self.num_feat} features{scaled}, x{self.scale}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.mean.to(x.dtype)
        x = (x - mean) * self.img_range
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x)) + x
        return self.conv_last(self.upsample(res)) / self.img_range + mean


# Parameter counts of the published weight files' configurations, derived from the layouts above (and checked by
# closed-form arithmetic in tests/training/test_sr_networks.py): name -> (network spec, parameters).
PUBLISHED_PARAMETERS: dict[str, tuple[dict[str, object], int]] = {
    "RRDB_ESRGAN_x4": ({"type": "rrdbnet", "scale": 4, "num_block": 23}, 16_697_987),
    "RealESRGAN_x4plus": ({"type": "rrdbnet", "scale": 4, "num_block": 23}, 16_697_987),
    "RealESRGAN_x2plus": ({"type": "rrdbnet", "scale": 2, "num_block": 23}, 16_703_171),
    "RealESRGAN_x4plus_anime_6B": ({"type": "rrdbnet", "scale": 4, "num_block": 6}, 4_467_779),
    "realesr-general-x4v3": ({"type": "srvgg-compact", "scale": 4, "num_conv": 32}, 1_213_296),
    "realesr-animevideov3": ({"type": "srvgg-compact", "scale": 4, "num_conv": 16}, 621_424),
    "MSRResNet_x4": ({"type": "msrresnet", "scale": 4}, 1_517_571),
    "EDSR_Mx2": ({"type": "edsr", "scale": 2}, 1_369_859),
    "EDSR_Mx3": ({"type": "edsr", "scale": 3}, 1_554_499),
    "EDSR_Mx4": ({"type": "edsr", "scale": 4}, 1_517_571),
    "EDSR_Lx2": ({"type": "edsr", "scale": 2, "num_feat": 256, "num_block": 32, "res_scale": 0.1}, 40_729_603),
    "EDSR_Lx3": ({"type": "edsr", "scale": 3, "num_feat": 256, "num_block": 32, "res_scale": 0.1}, 43_680_003),
    "EDSR_Lx4": ({"type": "edsr", "scale": 4, "num_feat": 256, "num_block": 32, "res_scale": 0.1}, 43_089_923),
}


# -- the published weight layouts these networks load (ganserve import) ------------------------------
_RRDB_UNSHUFFLE = {3: 4, 12: 2, 48: 1}  # conv_first input channels of an RGB RRDBNet -> scale


def _read_rrdbnet(state: State) -> Reading:
    num_feat, in_ch = shape(state, "conv_first.weight", 4)[:2]
    last = shape(state, "conv_last.weight", 4)[0]
    blocks = indices(state)
    if not blocks:
        raise ImportFailure("no body.N blocks")
    if in_ch not in _RRDB_UNSHUFFLE:
        raise ImportFailure(f"conv_first.weight takes {in_ch} input channels; an RGB RRDBNet takes 3 (x4), "
                            "12 (x2, pixel-unshuffled by 2) or 48 (x1, by 4)")
    three_channels("this RRDBNet", 3, last)
    grow = shape(state, "body.0.rdb1.conv1.weight", 4)[0]
    scale = _RRDB_UNSHUFFLE[in_ch]
    notes = [f"input pixel-unshuffled by {4 // scale}: sides must be multiples of {4 // scale}"] if scale < 4 else []
    return sr_reading("rrdbnet", scale, {"num_feat": num_feat, "num_block": len(blocks), "num_grow_ch": grow}, notes)


_ESRGAN_OLD_FIXED = {"model.0": "conv_first", "model.3": "conv_up1", "model.6": "conv_up2", "model.8": "conv_hr",
                     "model.10": "conv_last"}


def _rename_esrgan_old(state: State) -> State:
    """The original ESRGAN release's keys (``model.N`` Sequential) under BasicSR RRDBNet's names."""
    rdb = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)\Z")
    trunk = re.compile(r"model\.1\.sub\.(\d+)\.(weight|bias)\Z")
    blocks = {int(m.group(1)) for k in state if (m := rdb.match(k))}
    out: State = {}
    for key, value in state.items():
        head, _, param = key.rpartition(".")
        if (m := rdb.match(key)):
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
        elif (m := trunk.match(key)):
            if int(m.group(1)) != len(blocks):
                raise ImportFailure(f"{key}: the trunk conv should follow the {len(blocks)} RRDB blocks "
                                    f"(model.1.sub.{len(blocks)})")
            out[f"conv_body.{param}"] = value
        elif head in _ESRGAN_OLD_FIXED:
            out[f"{_ESRGAN_OLD_FIXED[head]}.{param}"] = value
        else:
            out[key] = value
    return out


def _read_esrgan_old(state: State) -> Reading:
    reading = _read_rrdbnet(state)
    if reading.hyper["scale"] != 4:
        raise ImportFailure("the original ESRGAN layout is x4 (3 input channels), "
                            f"this one takes {3 * (4 // reading.hyper['scale']) ** 2}")
    return reading


def _read_srvgg(state: State) -> Reading:
    numbers = indices(state)
    convs = [i for i in numbers if state.get(f"body.{i}.weight") is not None and state[f"body.{i}.weight"].ndim == 4]
    acts = [i for i in numbers if i not in convs]
    if not convs or convs != list(range(0, 2 * len(convs), 2)):
        raise ImportFailure(f"convolutions at body.{{{','.join(map(str, convs))}}}; SRVGGNetCompact has them at even "
                            "indices, each followed by an activation")
    if not acts:
        raise ImportFailure("the activations hold no weights (relu or leakyrelu), which the keys cannot tell apart; "
                            "the PReLU layout (every Real-ESRGAN compact release) is read")
    num_feat, in_ch = shape(state, "body.0.weight", 4)[:2]
    for i in acts:
        if shape(state, f"body.{i}.weight", 1) != (num_feat,):
            raise ImportFailure(f"body.{i}.weight has shape {list(state[f'body.{i}.weight'].shape)}, "
                                f"a PReLU of {num_feat} features has [{num_feat}]")
    last_out = shape(state, f"body.{convs[-1]}.weight", 4)[0]
    scale = math.isqrt(max(last_out // 3, 1))
    if last_out % 3 or scale * scale * 3 != last_out:
        raise ImportFailure(f"the last conv body.{convs[-1]} returns {last_out} channels, not 3 x scale^2")
    three_channels("this SRVGGNetCompact", in_ch, 3)
    return sr_reading("srvgg-compact", scale, {"num_feat": num_feat, "num_conv": len(convs) - 2, "act_type": "prelu"})


def _read_msrresnet(state: State) -> Reading:
    num_feat, in_ch = shape(state, "conv_first.weight", 4)[:2]
    three_channels("this MSRResNet", in_ch, shape(state, "conv_last.weight", 4)[0])
    blocks = indices(state)
    up1 = shape(state, "upconv1.weight", 4)[0]
    if "upconv2.weight" in state:
        scale = 4
    else:
        scale = math.isqrt(up1 // num_feat) if up1 % num_feat == 0 else 0
        if scale not in (2, 3) or scale * scale * num_feat != up1:
            raise ImportFailure(f"upconv1 returns {up1} channels for {num_feat} features: neither x2 ({4 * num_feat}) "
                                f"nor x3 ({9 * num_feat}), and there is no upconv2 (x4)")
    return sr_reading("msrresnet", scale, {"num_feat": num_feat, "num_block": len(blocks)})


def _read_edsr(state: State) -> Reading:
    num_feat, in_ch = shape(state, "conv_first.weight", 4)[:2]
    three_channels("this EDSR", in_ch, shape(state, "conv_last.weight", 4)[0])
    blocks = indices(state)
    ups = sorted({int(m.group(1)) for k in state if (m := re.match(r"upsample\.(\d+)\.weight\Z", k))})
    outs = [shape(state, f"upsample.{i}.weight", 4)[0] for i in ups]
    if ups != list(range(0, 2 * len(ups), 2)):
        raise ImportFailure(f"upsample convs at {ups}; EDSR has one every other index (conv, pixel shuffle)")
    if outs == [9 * num_feat]:
        scale = 3
    elif outs and all(o == 4 * num_feat for o in outs):
        scale = 2 ** len(outs)
    else:
        raise ImportFailure(f"upsample convs return {outs} channels for {num_feat} features: EDSR's are 4x (x2 each) "
                            "or one 9x (x3)")
    # res_scale is not in the keys: the EDSR paper's large model (256 features, 32 blocks) scales residuals by 0.1
    large = (num_feat, len(blocks)) == (256, 32)
    res_scale = 0.1 if large else 1.0
    notes = [f"res_scale {res_scale:g}, img_range 255 and BasicSR's DIV2K rgb_mean are not in the keys: "
             f"{'the EDSR paper large model (256 x 32) uses 0.1' if large else 'res_scale 1 as BasicSR EDSR_M'}"]
    return sr_reading("edsr", scale, {"num_feat": num_feat, "num_block": len(blocks), "res_scale": res_scale}, notes)


register_layout(Format(
    "realesrgan", "Real-ESRGAN / BasicSR RRDBNet (RealESRGAN_x4plus, _x2plus, _anime_6B, BasicSR ESRGAN)",
    ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight", "conv_up2.weight",
     "conv_hr.weight", "conv_last.weight"),
    (r"(conv_first|conv_body|conv_up1|conv_up2|conv_hr|conv_last)\.(weight|bias)",
     r"body\.\d+\.rdb[123]\.conv[1-5]\.(weight|bias)"),
    _read_rrdbnet))

register_layout(Format(
    "esrgan", "original ESRGAN release (RRDB_ESRGAN_x4.pth, model.N keys)",
    ("model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight", "model.3.weight", "model.6.weight", "model.8.weight",
     "model.10.weight"),
    (r"model\.(0|3|6|8|10)\.(weight|bias)", r"model\.1\.sub\.\d+\.RDB[123]\.conv[1-5]\.0\.(weight|bias)",
     r"model\.1\.sub\.\d+\.(weight|bias)"),
    _read_esrgan_old, _rename_esrgan_old,
    "model.0 -> conv_first; model.1.sub.N.RDBk.convj.0 -> body.N.rdbk.convj; model.1.sub.<blocks> -> conv_body; "
    "model.3 -> conv_up1; model.6 -> conv_up2; model.8 -> conv_hr; model.10 -> conv_last"))

register_layout(Format(
    "srvgg", "Real-ESRGAN SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3)",
    ("body.0.weight", "body.0.bias", "body.2.weight"),
    (r"body\.\d+\.(weight|bias)",),
    _read_srvgg))

register_layout(Format(
    "msrresnet", "BasicSR MSRResNet (SRResNet without batch norm)",
    ("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight", "conv_last.weight"),
    (r"(conv_first|upconv1|upconv2|conv_hr|conv_last)\.(weight|bias)", r"body\.\d+\.conv[12]\.(weight|bias)"),
    _read_msrresnet))

register_layout(Format(
    "edsr", "BasicSR EDSR",
    ("conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "upsample.0.weight", "conv_last.weight"),
    (r"(conv_first|conv_after_body|conv_last)\.(weight|bias)", r"body\.\d+\.conv[12]\.(weight|bias)",
     r"upsample\.\d+\.(weight|bias)"),
    _read_edsr))
