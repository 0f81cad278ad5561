"""Wasserstein auto-encoder (Tolstikhin et al. 2018) on the digits: deterministic encoder, decoder, squared-error
reconstruction cost, and a penalty pulling the aggregate code distribution to the prior N(0, I):
- ``wae-gan``: an MLP discriminator on codes (prior samples = real, codes = fake); the encoder gets the
  non-saturating loss, weight lambda = 1 (the paper's MNIST setting);
- ``wae-mmd``: MMD with the inverse multiquadratic kernel over several scales, lambda = 10 (the paper's MNIST).
Adam: 1e-3 for the auto-encoder and 5e-4 for the latent discriminator, beta1 0.5, as in the paper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.applications.genbase import DigitsGenApp, DigitsGenConfig
from ganserve.training.networks import describe_network
from ganserve.training.networks.dcgan import mlp
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.latent import imq_mmd
from ganserve.training.registry import register_model

PENALTIES = ("gan", "mmd")


@dataclass
class WAEConfig(DigitsGenConfig):
    """``penalty`` gan | mmd; ``penalty_weight`` 0 takes the paper's weight for it (1 for gan, 10 for mmd)."""

    penalty: str = "mmd"
    penalty_weight: float = 0.0
    lr: float = 1e-3
    d_lr: float = 5e-4
    d_hidden: int = 128


@register_model("wae", WAEConfig)
class WAEApp(DigitsGenApp):
    """Encoder x -> z, decoder z -> logits, and (for the GAN penalty) a discriminator on codes."""

    config: WAEConfig

    def __init__(self, config: WAEConfig) -> None:
        super().__init__(config)
        if config.penalty not in PENALTIES:
            raise GanserveError(f"penalty must be one of {', '.join(PENALTIES)}, got {config.penalty!r}")
        self.encoder = self.build_encoder(config.latent_dim)
        self.decoder = self.build_decoder(config.latent_dim)
        self.latent_discriminator = mlp(config.latent_dim, config.d_hidden, 1, 3) if config.penalty == "gan" else None
        self.weight = config.penalty_weight or (1.0 if config.penalty == "gan" else 10.0)
        self.objective = get_objective("nonsaturating")

    def sampler(self) -> nn.Module:
        return self.decoder

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        opts = {"ae": self.adam(params, c.lr)}
        if self.latent_discriminator is not None:
            opts["d"] = self.adam(self.latent_discriminator, c.d_lr)
        return opts

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        x, _, gen = batch
        x = x.to(self.device)
        prior = self.noise(x.shape[0], gen)
        z = self.encoder(x)
        out: dict[str, float] = {}
        if self.latent_discriminator is not None:
            d = self.latent_discriminator
            d_loss = self.objective.d_loss(d(prior).view(-1), d(z.detach()).view(-1))
            self.optimize("d", d_loss)
            penalty = self.objective.g_loss(d(z).view(-1), d(prior).view(-1))
            out["loss_d"] = float(d_loss.detach())
        else:
            penalty = imq_mmd(z, prior)
        recon = ((torch.sigmoid(self.decoder(z)) - x) ** 2).flatten(1).sum(1).mean()
        loss = recon + self.weight * penalty
        self.optimize("ae", loss)
        return {"loss": float(loss.detach()), "recon": float(recon.detach()), "penalty": float(penalty.detach()), **out}

    def architecture(self) -> str:
        c = self.config
        return f"WAE-{c.penalty.upper()} decoder, latent {c.latent_dim}, {describe_network(self.decoder)}"
