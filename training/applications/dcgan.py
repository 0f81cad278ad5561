"""DCGAN (Radford et al. 2016) on the digits: conv generator and discriminator, any adversarial objective by name.

The objective's paper recipe sets n_critic, weight clipping and the gradient penalty (``training.objectives``), so
``--set objective=wgan-gp`` trains a WGAN-GP critic with the same networks (batch norm is dropped from the critic
for the gradient penalty, which is defined per sample). By default the optimisers are the objective's paper recipe
too (DCGAN's Adam 2e-4, beta1 0.5 for the logistic losses; RMSProp 5e-5 for WGAN; Adam 1e-4, betas (0, 0.9) for
WGAN-GP); ``paper_optimizer=false`` uses the config's Adam ``lr``/``beta1``/``beta2`` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganserve.training.applications.genbase import DigitsGenApp, DigitsGenConfig
from ganserve.training.objectives import clip_weights, get_objective, gradient_penalty
from ganserve.training.registry import register_model


@dataclass
class DCGANConfig(DigitsGenConfig):
    """DCGAN on the digits; ``objective`` is any name in training.objectives."""

    objective: str = "nonsaturating"
    paper_optimizer: bool = True  # the objective's paper optimiser; false: Adam with lr/beta1/beta2 below


@register_model("dcgan", DCGANConfig)
class DCGANApp(DigitsGenApp):
    """Generator z -> image, discriminator image -> logit; n_critic D updates per G update."""

    config: DCGANConfig

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__(config)
        self.objective = get_objective(config.objective)
        recipe = self.objective.recipe
        self.generator = self.build_decoder(config.latent_dim)
        self.discriminator = self.build_encoder(1, norm=recipe.gp_weight == 0)

    def sampler(self) -> nn.Module:
        return self.generator

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        if c.paper_optimizer:
            return {"g": self.objective.make_optimizer(self.generator.parameters()),
                    "d": self.objective.make_optimizer(self.discriminator.parameters())}
        betas = (c.beta1, c.beta2)
        return {"g": torch.optim.Adam(self.generator.parameters(), lr=c.lr, betas=betas),
                "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=betas)}

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        x, _, gen = batch
        x = x.to(self.device)
        recipe = self.objective.recipe
        n = x.shape[0]
        for _ in range(recipe.n_critic):
            fake = torch.sigmoid(self.generator(self.noise(n, gen))).detach()
            d_loss = self.objective.d_loss(self.discriminator(x).view(-1), self.discriminator(fake).view(-1))
            total = d_loss
            if recipe.gp_weight:
                total = total + gradient_penalty(self.discriminator, x, fake, recipe.gp_weight, gen)
            self.optimize("d", total)
            if recipe.clip:
                clip_weights(self.discriminator, recipe.clip)
        fake = torch.sigmoid(self.generator(self.noise(n, gen)))
        g_loss = self.objective.g_loss(self.discriminator(fake).view(-1), self.discriminator(x).view(-1))
        self.optimize("g", g_loss)
        return {"loss_d": float(d_loss.detach()), "loss_g": float(g_loss.detach())}
