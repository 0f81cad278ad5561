"""Adversarial objectives by name: each gives the discriminator loss and the generator loss from raw logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ganserve.errors import GanserveError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """``d_loss(real_logits, fake_logits)`` and ``g_loss(fake_logits, real_logits)`` (the latter may ignore real)."""

    name: str
    d_loss: LossFn
    g_loss: LossFn


_OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, d_loss: LossFn, g_loss: LossFn) -> Objective:
    """Add an objective under ``name`` (applications pick one by config string)."""
    if name in _OBJECTIVES:
        raise ValueError(f"objective {name!r} registered twice")
    _OBJECTIVES[name] = Objective(name, d_loss, g_loss)
    return _OBJECTIVES[name]


def get_objective(name: str) -> Objective:
    """The objective registered as ``name``; a clear error listing the known ones."""
    if name not in _OBJECTIVES:
        raise GanserveError(f"unknown adversarial objective {name!r}; known: {', '.join(sorted(_OBJECTIVES))}")
    return _OBJECTIVES[name]


def objectives() -> list[str]:
    """Names of the registered objectives."""
    return sorted(_OBJECTIVES)


# Original GAN (Goodfellow et al. 2014): D maximises log D(x) + log(1 - D(G(z))); G minimises log(1 - D(G(z))).
def _bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def _minimax_g(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return -F.softplus(fake).mean()  # log(1 - sigmoid(f)) = -softplus(f)


def _nonsaturating_g(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake).mean()  # -log sigmoid(f), the SRGAN paper's generator loss


# Least squares GAN (Mao et al. 2017), targets a=0, b=c=1.
def _lsgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def _lsgan_g(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


# Hinge loss (Lim & Ye 2017; Miyato et al. 2018).
def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def _critic_g(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return -fake.mean()


# Wasserstein critic (Arjovsky et al. 2017); needs a Lipschitz constraint such as a gradient penalty.
def _wgan_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return fake.mean() - real.mean()


register_objective("minimax", _bce_d, _minimax_g)
register_objective("nonsaturating", _bce_d, _nonsaturating_g)
register_objective("lsgan", _lsgan_d, _lsgan_g)
register_objective("hinge", _hinge_d, _critic_g)
register_objective("wgan", _wgan_d, _critic_g)
