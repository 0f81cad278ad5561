"""CVAE-GAN (Bao et al. 2017) on the digits: encoder E(x, c) -> q(z|x, c), generator G(z, c), discriminator D and
classifier C, conditioned on the digit class.

Losses (weights as in the paper: lambda1 = 3 on the KL, lambda2 = 1 on the pairwise term, lambda3 = lambda4 = 1e-3
on the mean feature matching):
- C: cross-entropy on real images;  D: logistic loss, real x against both reconstructions x' and samples x_p;
- E: lambda1 * KL(q(z|x, c) || N(0, I));
- G (and E through x'): pairwise 1/2 ||x - x'||^2 (pixels, summed) + 1/2 ||f_D(x) - f_D(x')||^2 +
  1/2 ||f_C(x) - f_C(x')||^2 (features, averaged over units so the network width does not set the weight), and
  mean feature matching ||E f_D(x) - E f_D(x_p)||^2 (lambda3) and, per class in the batch,
  ||E f_C(x|c) - E f_C(x_p|c)||^2 (lambda4) in place of the usual generator GAN loss.
Inpainting (``inpaint``): fill the masked pixels with G(E(x_hat, c), c) and repeat, x_hat = M*x' + (1 - M)*x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganserve.training.data import digits_gen
from ganserve.training.applications.genbase import DigitsGenApp, DigitsGenConfig, label_planes, one_hot
from ganserve.training.networks import describe_network
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.latent import gaussian_kl, reparameterize
from ganserve.training.registry import register_model


@dataclass
class CVAEGANConfig(DigitsGenConfig):
    """The paper's loss weights; Adam 2e-4, beta1 0.5 for every network."""

    kl_weight: float = 3.0  # lambda1
    pairwise_weight: float = 1.0  # lambda2
    gd_weight: float = 1e-3  # lambda3, mean feature matching on D's features
    gc_weight: float = 1e-3  # lambda4, class-wise mean feature matching on C's features


class ConditionalDecoder(nn.Module):
    """G(z, one-hot c): the decoder on [z, c] -- the generation path that gets exported."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([z, condition], dim=1))


def _sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1).mean()


@register_model("cvaegan", CVAEGANConfig)
class CVAEGANApp(DigitsGenApp):
    """Encoder, class-conditional generator, discriminator and classifier trained jointly."""

    config: CVAEGANConfig
    conditional = True

    def __init__(self, config: CVAEGANConfig) -> None:
        super().__init__(config)
        c, k = config, digits_gen.CLASSES
        self.encoder = self.build_encoder(2 * c.latent_dim, in_planes=1 + k)
        self.generator = self.build_decoder(c.latent_dim + k)
        self.discriminator = self.build_encoder(1)
        self.classifier = self.build_encoder(k)
        self.objective = get_objective("minimax")  # D's logistic loss; G learns by feature matching instead

    def sampler(self) -> nn.Module:
        return ConditionalDecoder(self.generator)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        return {
            "c": torch.optim.Adam(self.classifier.parameters(), lr=c.lr, betas=betas),
            "d": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr, betas=betas),
            "eg": torch.optim.Adam([*self.encoder.parameters(), *self.generator.parameters()], lr=c.lr, betas=betas),
        }

    def encode(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(torch.cat([x, label_planes(labels, x.shape[-1]).to(x.device)], 1)).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.generator(torch.cat([z, one_hot(labels).to(z.device)], 1)))

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        c = self.config
        x, y, gen = batch
        x, y = x.to(self.device), y.to(self.device)
        n = x.shape[0]
        c_loss = F.cross_entropy(self.classifier(x), y)
        self.optimize("c", c_loss)

        mu, logvar = self.encode(x, y)
        x_rec = self.decode(reparameterize(mu, logvar, gen), y)
        x_p = self.decode(self.noise(n, gen), y)
        d = self.discriminator
        d_loss = self.objective.d_loss(d(x).view(-1), d(x_rec.detach()).view(-1)) + self.objective.d_loss(
            d(x).view(-1), d(x_p.detach()).view(-1))
        self.optimize("d", d_loss)

        kl = gaussian_kl(mu, logvar).mean()
        fd_x, fd_rec, fd_p = d.features(x).detach(), d.features(x_rec), d.features(x_p)
        cf = self.classifier.features
        fc_x, fc_rec, fc_p = cf(x).detach(), cf(x_rec), cf(x_p)
        pairwise = 0.5 * ((x - x_rec) ** 2).flatten(1).sum(1).mean() + 0.5 * _sq(fd_x, fd_rec) + 0.5 * _sq(fc_x, fc_rec)
        gd = ((fd_x.mean(0) - fd_p.mean(0)) ** 2).sum()
        gc = x.new_zeros(())
        for k in torch.unique(y):
            sel = y == k
            gc = gc + ((fc_x[sel].mean(0) - fc_p[sel].mean(0)) ** 2).sum()
        eg_loss = c.kl_weight * kl + c.pairwise_weight * pairwise + c.gd_weight * gd + c.gc_weight * gc
        self.optimize("eg", eg_loss)
        return {"loss_c": float(c_loss.detach()), "loss_d": float(d_loss.detach()), "kl": float(kl.detach()),
                "pairwise": float(pairwise.detach()), "fm_d": float(gd.detach()), "fm_c": float(gc.detach())}

    @torch.no_grad()
    def inpaint(self, x: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, rounds: int = 5) -> list[torch.Tensor]:
        """Fill the pixels where ``mask`` is 1: x_hat = M * G(E(x_hat, c), c) + (1 - M) * x, repeated ``rounds``
        times from the masked pixels set to 0.5; returns x_hat after each round (N x 1 x S x S each)."""
        was = self.training
        self.eval()
        try:
            x, labels, mask = x.to(self.device), labels.to(self.device), mask.to(self.device)
            x_hat = mask * 0.5 + (1.0 - mask) * x
            out = []
            for _ in range(rounds):
                mu, _ = self.encode(x_hat, labels)
                x_hat = mask * self.decode(mu, labels) + (1.0 - mask) * x
                out.append(x_hat.cpu())
            return out
        finally:
            self.train(was)

    def architecture(self) -> str:
        c = self.config
        return f"CVAE-GAN generator G(z, class), latent {c.latent_dim}, {describe_network(self.generator)}"
