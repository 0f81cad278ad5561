"""Adversarial objectives by name: each gives the discriminator loss and the generator loss from raw logits.

Each objective also carries the training recipe its paper used (``Recipe``: optimiser, learning rate, betas,
critic updates per generator update, weight clipping, gradient-penalty weight), so an application that selects an
objective by name can take the paper's settings as its defaults. The Lipschitz tools the Wasserstein critics need,
``gradient_penalty`` and ``clip_weights``, are here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.errors import GanserveError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Recipe:
    """The optimiser settings a paper trained its objective with; ``source`` names the paper."""

    optimizer: str = "adam"  # adam | rmsprop
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 1  # discriminator (critic) updates per generator update
    clip: float = 0.0  # weight clipping bound c for the critic; 0 = none
    gp_weight: float = 0.0  # gradient-penalty weight lambda; 0 = none
    source: str = ""


# DCGAN (Radford et al. 2016): Adam, lr 2e-4, beta1 0.5 -- the usual settings for the logistic-loss GANs.
DCGAN_RECIPE = Recipe("adam", 2e-4, (0.5, 0.999), 1, source="Radford et al. 2016 (DCGAN)")


@dataclass(frozen=True)
class Objective:
    """``d_loss(real_logits, fake_logits)`` and ``g_loss(fake_logits, real_logits)`` (the latter may ignore real)."""

    name: str
    d_loss: LossFn
    g_loss: LossFn
    recipe: Recipe = DCGAN_RECIPE

    def make_optimizer(self, params: Iterable[nn.Parameter], lr: float | None = None) -> torch.optim.Optimizer:
        """The recipe's optimiser over ``params`` (``lr`` overrides the paper's rate)."""
        r = self.recipe
        if r.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr or r.lr)
        return torch.optim.Adam(params, lr=lr or r.lr, betas=r.betas)


_OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, d_loss: LossFn, g_loss: LossFn, recipe: Recipe = DCGAN_RECIPE) -> Objective:
    """Add an objective under ``name`` (applications pick one by config string)."""
    if name in _OBJECTIVES:
        raise ValueError(f"objective {name!r} registered twice")
    _OBJECTIVES[name] = Objective(name, d_loss, g_loss, recipe)
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


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    weight: float = 10.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): weight * mean (||grad_x D(x_hat)||_2 - 1)^2, x_hat = e*real + (1-e)*fake.

    ``e`` ~ U[0, 1] per sample; the graph is kept (create_graph) so the penalty trains the critic.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {tuple(real.shape)} and fake {tuple(fake.shape)} differ")
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    eps = torch.rand(shape, generator=generator, dtype=real.dtype).to(real.device)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)
    return weight * ((norms - 1.0) ** 2).mean()


@torch.no_grad()
def clip_weights(module: nn.Module, c: float) -> None:
    """WGAN's Lipschitz constraint (Arjovsky et al. 2017): clamp every critic parameter into [-c, c]."""
    if c <= 0:
        raise ValueError(f"clip bound must be > 0, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)


register_objective("minimax", _bce_d, _minimax_g)
register_objective("nonsaturating", _bce_d, _nonsaturating_g)
# LSGAN (Mao et al. 2017): Adam, lr 2e-4, beta1 0.5.
register_objective("lsgan", _lsgan_d, _lsgan_g, Recipe("adam", 2e-4, (0.5, 0.999), 1, source="Mao et al. 2017"))
# Hinge with spectral norm (Miyato et al. 2018): Adam lr 2e-4, betas (0, 0.9), 5 critic updates.
register_objective("hinge", _hinge_d, _critic_g, Recipe("adam", 2e-4, (0.0, 0.9), 5, source="Miyato et al. 2018"))
# WGAN (Arjovsky et al. 2017, Algorithm 1): RMSProp lr 5e-5, clipping c = 0.01, n_critic = 5.
register_objective("wgan", _wgan_d, _critic_g,
                   Recipe("rmsprop", 5e-5, (0.0, 0.0), 5, clip=0.01, source="Arjovsky et al. 2017"))
# WGAN-GP (Gulrajani et al. 2017, Algorithm 1): Adam lr 1e-4, betas (0, 0.9), lambda = 10, n_critic = 5.
register_objective("wgan-gp", _wgan_d, _critic_g,
                   Recipe("adam", 1e-4, (0.0, 0.9), 5, gp_weight=10.0, source="Gulrajani et al. 2017"))
