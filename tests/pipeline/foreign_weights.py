"""Weight files in the published layouts (Real-ESRGAN / BasicSR, the original ESRGAN release, pytorch-CycleGAN-and-
pix2pix), made here with random weights, and each network's forward pass written out as functions of the state dict.

The functions below read only the state dict (torch.nn.functional, no ganserve module), so they check the project's
networks against the published architectures independently of how those networks are written.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

State = dict[str, torch.Tensor]


class Maker:
    """Random tensors from one seeded generator, scaled so activations stay in a sensible range."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.state: State = {}

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=self.gen)

    def conv(self, name: str, cin: int, cout: int, k: int = 3, bias: bool = True, gain: float = 1.0,
             transposed: bool = False, bias_value: float | None = None) -> None:
        shape = (cin, cout, k, k) if transposed else (cout, cin, k, k)
        self.state[f"{name}.weight"] = self.randn(*shape) * gain / math.sqrt(cin * k * k)
        if bias:
            b = self.randn(cout) * 0.05
            self.state[f"{name}.bias"] = b + bias_value if bias_value is not None else b

    def prelu(self, name: str, channels: int) -> None:
        self.state[f"{name}.weight"] = 0.25 + 0.05 * self.randn(channels)

    def batch_norm(self, name: str, channels: int, counter: bool = True) -> None:
        self.state[f"{name}.weight"] = 1.0 + 0.1 * self.randn(channels)
        self.state[f"{name}.bias"] = 0.1 * self.randn(channels)
        self.state[f"{name}.running_mean"] = 0.1 * self.randn(channels)
        self.state[f"{name}.running_var"] = 0.5 + torch.rand(channels, generator=self.gen)
        if counter:
            self.state[f"{name}.num_batches_tracked"] = torch.tensor(1000)


# -- Real-ESRGAN / BasicSR RRDBNet and the original ESRGAN release -----------------------------------------------------
def rrdbnet_state(num_feat: int = 8, num_block: int = 2, grow: int = 4, scale: int = 4, seed: int = 0,
                  last_gain: float = 3.0) -> State:
    m = Maker(seed)
    m.conv("conv_first", 3 * (4 // scale) ** 2, num_feat)
    for i in range(num_block):
        for k in (1, 2, 3):
            for j in range(1, 6):
                m.conv(f"body.{i}.rdb{k}.conv{j}", num_feat + (j - 1) * grow, num_feat if j == 5 else grow)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        m.conv(name, num_feat, num_feat)
    m.conv("conv_last", num_feat, 3, gain=last_gain, bias_value=0.5)
    return m.state


def esrgan_old_keys(state: State) -> State:
    """BasicSR RRDBNet names -> the original ESRGAN release's (architecture.py's flattened Sequential)."""
    blocks = len({k.split(".")[1] for k in state if k.startswith("body.")})
    fixed = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}", "conv_up1": "model.3",
             "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "body":
            _, i, rdb, conv, param = parts
            out[f"model.1.sub.{i}.RDB{rdb[-1]}.{conv}.0.{param}"] = value
        else:
            out[f"{fixed[parts[0]]}.{parts[1]}"] = value
    return out


def _conv(sd: State, name: str, x: torch.Tensor, stride: int = 1, padding: int = 1) -> torch.Tensor:
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride=stride, padding=padding)


def _unshuffle(x: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = x.shape
    return x.view(b, c, h // s, s, w // s, s).permute(0, 1, 3, 5, 2, 4).reshape(b, c * s * s, h // s, w // s)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


def rrdbnet_forward(sd: State, x: torch.Tensor, scale: int) -> torch.Tensor:
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    if scale < 4:
        x = _unshuffle(x, 4 // scale)
    feat = _conv(sd, "conv_first", x)
    h = feat
    for i in range(blocks):
        block_in = h
        for k in (1, 2, 3):
            feats = [h]
            for j in range(1, 5):
                feats.append(lrelu(_conv(sd, f"body.{i}.rdb{k}.conv{j}", torch.cat(feats, 1))))
            h = h + 0.2 * _conv(sd, f"body.{i}.rdb{k}.conv5", torch.cat(feats, 1))
        h = block_in + 0.2 * h
    feat = feat + _conv(sd, "conv_body", h)
    feat = lrelu(_conv(sd, "conv_up1", _up2(feat)))
    feat = lrelu(_conv(sd, "conv_up2", _up2(feat)))
    return _conv(sd, "conv_last", lrelu(_conv(sd, "conv_hr", feat)))


# -- Real-ESRGAN SRVGGNetCompact ---------------------------------------------------------------------------------------
def srvgg_state(num_feat: int = 8, num_conv: int = 3, scale: int = 4, seed: int = 1) -> State:
    m = Maker(seed)
    m.conv("body.0", 3, num_feat)
    m.prelu("body.1", num_feat)
    for n in range(num_conv):
        m.conv(f"body.{2 * n + 2}", num_feat, num_feat)
        m.prelu(f"body.{2 * n + 3}", num_feat)
    m.conv(f"body.{2 * num_conv + 2}", num_feat, 3 * scale * scale, gain=0.3)
    return m.state


def srvgg_forward(sd: State, x: torch.Tensor, scale: int) -> torch.Tensor:
    out = x
    for i in range(len({k.split(".")[1] for k in sd})):
        w = sd[f"body.{i}.weight"]
        out = _conv(sd, f"body.{i}", out) if w.ndim == 4 else F.prelu(out, w)
    return F.pixel_shuffle(out, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")


# -- BasicSR MSRResNet and EDSR ----------------------------------------------------------------------------------------
def msrresnet_state(num_feat: int = 8, num_block: int = 2, scale: int = 4, seed: int = 2) -> State:
    m = Maker(seed)
    m.conv("conv_first", 3, num_feat)
    for i in range(num_block):
        m.conv(f"body.{i}.conv1", num_feat, num_feat)
        m.conv(f"body.{i}.conv2", num_feat, num_feat, gain=0.3)
    if scale == 4:
        m.conv("upconv1", num_feat, 4 * num_feat)
        m.conv("upconv2", num_feat, 4 * num_feat)
    else:
        m.conv("upconv1", num_feat, scale * scale * num_feat)
    m.conv("conv_hr", num_feat, num_feat)
    m.conv("conv_last", num_feat, 3, gain=0.3)
    return m.state


def msrresnet_forward(sd: State, x: torch.Tensor, scale: int) -> torch.Tensor:
    lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    out = lrelu(_conv(sd, "conv_first", x))
    for i in range(blocks):
        out = out + _conv(sd, f"body.{i}.conv2", F.relu(_conv(sd, f"body.{i}.conv1", out)))
    if scale == 4:
        out = lrelu(F.pixel_shuffle(_conv(sd, "upconv1", out), 2))
        out = lrelu(F.pixel_shuffle(_conv(sd, "upconv2", out), 2))
    else:
        out = lrelu(F.pixel_shuffle(_conv(sd, "upconv1", out), scale))
    out = _conv(sd, "conv_last", lrelu(_conv(sd, "conv_hr", out)))
    return out + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


EDSR_MEAN = (0.4488, 0.4371, 0.4040)  # BasicSR's DIV2K RGB mean


def edsr_state(num_feat: int = 8, num_block: int = 2, scale: int = 4, seed: int = 3) -> State:
    m = Maker(seed)
    m.conv("conv_first", 3, num_feat)
    for i in range(num_block):
        m.conv(f"body.{i}.conv1", num_feat, num_feat)
        m.conv(f"body.{i}.conv2", num_feat, num_feat, gain=0.3)
    m.conv("conv_after_body", num_feat, num_feat)
    if scale == 3:
        m.conv("upsample.0", num_feat, 9 * num_feat)
    else:
        for n in range(int(math.log2(scale))):
            m.conv(f"upsample.{2 * n}", num_feat, 4 * num_feat)
    m.conv("conv_last", num_feat, 3, gain=0.3)
    return m.state


def edsr_forward(sd: State, x: torch.Tensor, scale: int, res_scale: float = 1.0) -> torch.Tensor:
    mean = torch.tensor(EDSR_MEAN).view(1, 3, 1, 1)
    blocks = len({k.split(".")[1] for k in sd if k.startswith("body.")})
    h = _conv(sd, "conv_first", (x - mean) * 255.0)
    res = h
    for i in range(blocks):
        res = res + res_scale * _conv(sd, f"body.{i}.conv2", F.relu(_conv(sd, f"body.{i}.conv1", res)))
    res = _conv(sd, "conv_after_body", res) + h
    ups = sorted(int(k.split(".")[1]) for k in sd if k.startswith("upsample.") and k.endswith(".weight"))
    for i in ups:
        res = F.pixel_shuffle(_conv(sd, f"upsample.{i}", res), 3 if scale == 3 else 2)
    return _conv(sd, "conv_last", res) / 255.0 + mean


# -- pytorch-CycleGAN-and-pix2pix ResnetGenerator and UnetGenerator ----------------------------------------------------
def resnet_generator_state(ngf: int = 4, blocks: int = 6, norm: str = "instance", dropout: bool = False,
                           seed: int = 4) -> State:
    """networks.py's ResnetGenerator: model.N Sequential; ResnetBlock.conv_block (with dropout its second conv and
    norm sit at 6 and 7)."""
    m = Maker(seed)
    bias = norm == "instance"

    def normed(name: str, channels: int) -> None:
        if norm == "batch":
            m.batch_norm(name, channels)

    m.conv("model.1", 3, ngf, k=7, bias=bias)
    normed("model.2", ngf)
    m.conv("model.4", ngf, 2 * ngf, bias=bias)
    normed("model.5", 2 * ngf)
    m.conv("model.7", 2 * ngf, 4 * ngf, bias=bias)
    normed("model.8", 4 * ngf)
    second = 6 if dropout else 5
    for i in range(10, 10 + blocks):
        m.conv(f"model.{i}.conv_block.1", 4 * ngf, 4 * ngf, bias=bias)
        normed(f"model.{i}.conv_block.2", 4 * ngf)
        m.conv(f"model.{i}.conv_block.{second}", 4 * ngf, 4 * ngf, bias=bias, gain=0.5)
        normed(f"model.{i}.conv_block.{second + 1}", 4 * ngf)
    n = blocks
    m.conv(f"model.{10 + n}", 4 * ngf, 2 * ngf, bias=bias, transposed=True)
    normed(f"model.{11 + n}", 2 * ngf)
    m.conv(f"model.{13 + n}", 2 * ngf, ngf, bias=bias, transposed=True)
    normed(f"model.{14 + n}", ngf)
    m.conv(f"model.{17 + n}", ngf, 3, k=7)
    return m.state


def _norm(sd: State, name: str, x: torch.Tensor, norm: str) -> torch.Tensor:
    if norm == "instance":
        return F.instance_norm(x, eps=1e-5)
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-5)


def resnet_generator_forward(sd: State, x: torch.Tensor, norm: str, dropout: bool = False) -> torch.Tensor:
    """[-1, 1] in and out, eval mode."""
    blocks = len({k.split(".")[1] for k in sd if ".conv_block." in k})
    pad = lambda t, p: F.pad(t, (p, p, p, p), mode="reflect")  # noqa: E731
    h = F.relu(_norm(sd, "model.2", _conv(sd, "model.1", pad(x, 3), padding=0), norm))
    h = F.relu(_norm(sd, "model.5", _conv(sd, "model.4", h, stride=2), norm))
    h = F.relu(_norm(sd, "model.8", _conv(sd, "model.7", h, stride=2), norm))
    second = 6 if dropout else 5
    for i in range(10, 10 + blocks):
        y = _conv(sd, f"model.{i}.conv_block.1", pad(h, 1), padding=0)
        y = F.relu(_norm(sd, f"model.{i}.conv_block.2", y, norm))
        y = _norm(sd, f"model.{i}.conv_block.{second + 1}",
                  _conv(sd, f"model.{i}.conv_block.{second}", pad(y, 1), padding=0), norm)
        h = h + y
    n = blocks
    for up, nm in ((10 + n, 11 + n), (13 + n, 14 + n)):
        h = F.conv_transpose2d(h, sd[f"model.{up}.weight"], sd.get(f"model.{up}.bias"), stride=2, padding=1,
                               output_padding=1)
        h = F.relu(_norm(sd, f"model.{nm}", h, norm))
    return torch.tanh(_conv(sd, f"model.{17 + n}", pad(h, 3), padding=0))


def unet_prefix(level: int) -> str:
    """UnetSkipConnectionBlock nesting: the outermost block holds its child at index 1, the others at index 3."""
    return "model.model." + ("1.model." + "3.model." * (level - 1) if level else "")


def unet_state(depth: int = 7, ngf: int = 4, norm: str = "batch", seed: int = 5) -> State:
    m = Maker(seed)
    bias = norm == "instance"
    widths = [ngf * min(2**i, 8) for i in range(depth)]

    def normed(name: str, channels: int) -> None:
        if norm == "batch":
            m.batch_norm(name, channels)

    for level in range(depth):
        p, inner = unet_prefix(level), widths[level]
        if level == 0:
            m.conv(f"{p}0", 3, inner, k=4, bias=bias)
            m.conv(f"{p}3", 2 * inner, 3, k=4, transposed=True)
            continue
        outer = widths[level - 1]
        m.conv(f"{p}1", outer, inner, k=4, bias=bias)
        if level == depth - 1:  # innermost: down, up, upnorm
            m.conv(f"{p}3", inner, outer, k=4, bias=bias, transposed=True)
            normed(f"{p}4", outer)
        else:
            normed(f"{p}2", inner)
            m.conv(f"{p}5", 2 * inner, outer, k=4, bias=bias, transposed=True)
            normed(f"{p}6", outer)
    return m.state


def unet_forward(sd: State, x: torch.Tensor, depth: int, norm: str) -> torch.Tensor:
    """[-1, 1] in and out, eval mode (dropout off)."""

    def up(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(t, sd[f"{name}.weight"], sd.get(f"{name}.bias"), stride=2, padding=1)

    def block(level: int, t: torch.Tensor) -> torch.Tensor:
        p = unet_prefix(level)
        if level == 0:
            h = block(1, _conv(sd, f"{p}0", t, stride=2))
            return torch.tanh(up(f"{p}3", F.relu(h)))
        h = _conv(sd, f"{p}1", F.leaky_relu(t, 0.2), stride=2)
        if level == depth - 1:
            h = _norm(sd, f"{p}4", up(f"{p}3", F.relu(h)), norm)
        else:
            h = block(level + 1, _norm(sd, f"{p}2", h, norm))
            h = _norm(sd, f"{p}6", up(f"{p}5", F.relu(h)), norm)
        return torch.cat([t, h], 1)

    return block(0, x)
