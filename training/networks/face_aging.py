"""Face-aging networks: the age-conditional generator and projection discriminator it trains against, and the
face networks (loss network and judges) that score identity and age.

Faces are RGB in [0, 1] at 64x64; an age condition is a one-hot row over ``AGE_GROUPS``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganserve.core.errors import GanserveError
from ganserve.training.age_groups import AGE_GROUPS
from ganserve.training.networks.registry import register_network

GROUPS = len(AGE_GROUPS)
SIZE = 64
FACE_NET_KINDS = ("loss_net", "age_judge", "id_judge")


def one_hot(groups: torch.Tensor) -> torch.Tensor:
    """Group indices (N,) -> float one-hot rows (N, 6)."""
    return F.one_hot(groups.long(), GROUPS).float()


class CondResBlock(nn.Module):
    """conv-GN-ReLU-conv-GN, then a per-channel scale and shift computed from the age group (FiLM), plus the skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels),
        )
        self.film = nn.Linear(GROUPS, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        return x + self.body(x) * (1 + gamma) + beta


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


def _fuse(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


@register_network("age-unet")
class AgeGenerator(nn.Module):
    """(face in [0, 1], one-hot target group) -> face at that age: U-Net with age planes and FiLM blocks."""

    def __init__(self, channels: int = 16, blocks: int = 3) -> None:
        super().__init__()
        if channels < 8 or channels % 8 or blocks < 1:
            raise GanserveError(f"age generator channels must be a multiple of 8 (>= 8) and blocks >= 1 "
                                f"(got {channels}, {blocks})")
        self.channels, self.blocks_count = channels, blocks
        c = channels
        self.inp = nn.Sequential(nn.Conv2d(3 + GROUPS, c, 3, padding=1), nn.ReLU(inplace=True))
        self.down1, self.down2 = _down(c, 2 * c), _down(2 * c, 4 * c)
        self.blocks = nn.ModuleList(CondResBlock(4 * c) for _ in range(blocks))
        self.up1 = _fuse(4 * c + 2 * c, 2 * c)
        self.up0 = _fuse(2 * c + c, c)
        self.out = nn.Conv2d(c, 3, 3, padding=1)
        with torch.no_grad():  # start near the identity map: a small residual
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def describe(self) -> str:
        """Name and sizes, as the model card's architecture states them."""
        c = self.channels
        return (f"U-Net generator {c}-{2 * c}-{4 * c} channels, {self.blocks_count} FiLM residual blocks, "
                f"age one-hot as planes + FiLM, {SIZE}x{SIZE}")

    def forward(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = image * 2.0 - 1.0
        planes = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        e0 = self.inp(torch.cat([x, planes], dim=1))
        e1 = self.down1(e0)
        h = self.down2(e1)
        for block in self.blocks:
            h = block(h, cond)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), e1], dim=1))
        h = self.up0(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), e0], dim=1))
        return ((x + self.out(h)).clamp(-1.0, 1.0) + 1.0) * 0.5


@register_network("age-projection-discriminator")
class AgeDiscriminator(nn.Module):
    """Projection discriminator: D(x, y) = w . phi(x) + embed(y) . phi(x); strided convs with spectral norm."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        layers: list[nn.Module] = []
        cin = 3
        for cout in (c, 2 * c, 4 * c, 8 * c):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(cin, 1))
        self.embed = spectral_norm(nn.Embedding(GROUPS, cin))

    def forward(self, image: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        phi = self.features(image * 2.0 - 1.0).sum(dim=(2, 3))
        return self.linear(phi).view(-1) + (self.embed(groups.long()) * phi).sum(dim=1)


@dataclass
class NetConfig:
    """Shape of one face network: conv widths (each stage halves the size), embedding size, identity classes."""

    kind: str
    widths: tuple[int, ...] = (24, 48, 96, 128)
    embed: int = 64
    identities: int = 0  # identity classes of the training softmax (0 = no identity head)
    age_head: bool = True
    norm: bool = False  # batch norm + ReLU after each conv (the judges) or leaky ReLU alone (the loss net)


class FaceNet(nn.Module):
    """Conv stages (stride 2) -> global average pool -> L2-normalised embedding; optional identity and age heads.

    Input: RGB in [0, 1], N x 3 x 64 x 64 (other sizes work: the pool is global).
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        ch = 3
        for w in cfg.widths:
            layers.append(nn.Conv2d(ch, w, 3, stride=2, padding=1))
            if cfg.norm:
                layers += [nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            else:
                layers.append(nn.LeakyReLU(0.2, inplace=True))
            ch = w
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Linear(ch, cfg.embed)
        self.id_head = nn.Linear(cfg.embed, cfg.identities) if cfg.identities else None
        self.age = nn.Linear(ch, len(AGE_GROUPS)) if cfg.age_head else None

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x * 2.0 - 1.0).mean(dim=(2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised identity embedding (N, embed)."""
        return F.normalize(self.embed(self.pooled(x)), dim=1)

    def age_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Age-group logits (N, 6)."""
        if self.age is None:
            raise GanserveError(f"{self.cfg.kind} has no age head")
        return self.age(self.pooled(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        h = self.pooled(x)
        emb = self.embed(h)
        id_logits = self.id_head(F.normalize(emb, dim=1) * 16.0) if self.id_head is not None else None
        return emb, id_logits, self.age(h) if self.age is not None else None


def net_config(kind: str, identities: int) -> NetConfig:
    """The fixed architecture of each kind: the judges differ from the loss net (batch norm, ReLU, widths)."""
    if kind == "loss_net":
        return NetConfig(kind, (24, 48, 96, 128), 64, identities, True, False)
    if kind == "age_judge":
        return NetConfig(kind, (16, 32, 64, 96), 32, 0, True, True)
    if kind == "id_judge":
        return NetConfig(kind, (16, 32, 64, 128), 64, identities, False, True)
    raise GanserveError(f"unknown face network kind {kind!r} (one of {', '.join(FACE_NET_KINDS)})")
