"""Exact rewrites of a torch module before tracing, into layers the CPU runtimes run well; each computes the same
function up to float rounding, and the export's parity check (against the module as trained) proves it per export.

``transposed_as_shuffle``: a ConvTranspose2d whose output is exactly ``s`` times its input (stride s, kernel - 2 *
padding = s: pix2pix's and derain's 4 x 4 / stride 2 / padding 1 upsamplers) becomes one ordinary convolution with
s * s outputs per channel, one per output phase, and a pixel shuffle. Output pixel s * i + p of a transposed
convolution sums input pixel i - d with weight tap s * d + p + padding for every d that keeps the tap inside the
kernel, so each phase is a plain convolution over the input. OpenVINO ran pix2pix's transposed convolutions
(ConvolutionBackpropData) as 51-65 % of its time; ordinary convolutions take its fastest kernels (docs/int8.md).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


def _phase_taps(k: int, s: int, p: int) -> tuple[int, list[list[tuple[int, int]]]]:
    """(reach, taps): for each output phase, the (input offset, kernel tap) pairs of a 1-d transposed convolution;
    offsets lie in -reach .. reach."""
    taps = []
    for phase in range(s):
        pairs = []
        for d in range(math.ceil((-phase - p) / s), math.floor((k - 1 - phase - p) / s) + 1):
            pairs.append((-d, s * d + phase + p))
        taps.append(pairs)
    reach = max(abs(off) for pairs in taps for off, _ in pairs)
    return reach, taps


class ShuffledTransposedConv(nn.Module):
    """ConvTranspose2d(stride s, size exactly s x) as Conv2d(C -> O * s * s) + pixel shuffle (see the module doc)."""

    def __init__(self, convt: nn.ConvTranspose2d) -> None:
        super().__init__()
        (kh, kw), (sh, sw), (ph, pw) = convt.kernel_size, convt.stride, convt.padding
        if not eligible(convt):
            raise ValueError("not a size-exact, ungrouped, undilated ConvTranspose2d with equal strides")
        s = sh
        (rh, th), (rw, tw) = _phase_taps(kh, s, ph), _phase_taps(kw, s, pw)
        w = convt.weight.detach().double()  # (C, O, kh, kw)
        c, o = w.shape[0], w.shape[1]
        kernel = torch.zeros(o * s * s, c, 2 * rh + 1, 2 * rw + 1, dtype=torch.float64)
        for a in range(s):
            for b in range(s):
                for oy, ky in th[a]:
                    for ox, kx in tw[b]:
                        kernel[a * s + b :: s * s, :, oy + rh, ox + rw] = w[:, :, ky, kx].t()
        self.s = s
        self.conv = nn.Conv2d(c, o * s * s, kernel.shape[2:], padding=(rh, rw), bias=convt.bias is not None)
        with torch.no_grad():
            self.conv.weight.copy_(kernel.float())
            if convt.bias is not None:
                self.conv.bias.copy_(convt.bias.detach().repeat_interleave(s * s))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), self.s)


def eligible(m: nn.Module) -> bool:
    """A ConvTranspose2d this rewrite reproduces exactly: equal strides, kernel - 2 * padding = stride, no groups,
    dilation or output padding."""
    if not isinstance(m, nn.ConvTranspose2d):
        return False
    (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
    return (sh == sw and sh > 1 and kh - 2 * ph == sh and kw - 2 * pw == sw and m.groups == 1
            and m.dilation == (1, 1) and m.output_padding == (0, 0) and m.padding_mode == "zeros")


def transposed_as_shuffle(module: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``module`` with every eligible ConvTranspose2d rewritten, and how many were (0: the module itself)."""
    if not any(eligible(m) for m in module.modules()):
        return module, 0
    out = copy.deepcopy(module)
    count = 0
    for parent in list(out.modules()):
        for name, child in list(parent.named_children()):
            if eligible(child):
                setattr(parent, name, ShuffledTransposedConv(child))
                count += 1
    return out.eval(), count
