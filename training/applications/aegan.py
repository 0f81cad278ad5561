"""AE-GAN on the digits: an unregularised auto-encoder learns codes; a latent generator G1 maps noise to codes,
judged against the encoder's codes by a code discriminator D1; an image discriminator D2 judges decoded G1 codes
against real images, so the decoder also learns to make its outputs sharp. Sampling: noise -> G1 -> decoder.
Latent interpolation walks between the codes of two real images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganserve.training.applications.genbase import DigitsGenApp, DigitsGenConfig
from ganserve.training.networks import describe_network
from ganserve.training.networks.dcgan import mlp
from ganserve.training.objectives import get_objective
from ganserve.training.registry import register_model


@dataclass
class AEGANConfig(DigitsGenConfig):
    """Loss weights: reconstruction (per-image squared error), code GAN (D1) and image GAN (D2) for G1/decoder."""

    recon_weight: float = 1.0
    code_adv_weight: float = 1.0
    image_adv_weight: float = 1.0
    hidden: int = 128  # width of G1 and D1
    objective: str = "nonsaturating"


class LatentSampler(nn.Module):
    """noise -> G1 -> decoder logits: the generation path that gets exported."""

    def __init__(self, g1: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.g1 = g1
        self.decoder = decoder

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.g1(noise))


@register_model("aegan", AEGANConfig)
class AEGANApp(DigitsGenApp):
    """Encoder, decoder, latent generator G1, code discriminator D1, image discriminator D2."""

    config: AEGANConfig

    def __init__(self, config: AEGANConfig) -> None:
        super().__init__(config)
        c = config
        self.objective = get_objective(c.objective)
        self.encoder = self.build_encoder(c.latent_dim)
        self.decoder = self.build_decoder(c.latent_dim)
        self.g1 = mlp(c.latent_dim, c.hidden, c.latent_dim, 3)
        self.d1 = mlp(c.latent_dim, c.hidden, 1, 3)
        self.d2 = self.build_encoder(1)

    def sampler(self) -> nn.Module:
        return LatentSampler(self.g1, self.decoder)

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        betas = (c.beta1, c.beta2)
        gen = [*self.encoder.parameters(), *self.decoder.parameters(), *self.g1.parameters()]
        return {"g": torch.optim.Adam(gen, lr=c.lr, betas=betas),
                "d": torch.optim.Adam([*self.d1.parameters(), *self.d2.parameters()], lr=c.lr, betas=betas)}

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        c = self.config
        x, _, gen = batch
        x = x.to(self.device)
        obj = self.objective
        codes = self.encoder(x)
        fake_codes = self.g1(self.noise(x.shape[0], gen))
        fake_images = torch.sigmoid(self.decoder(fake_codes))
        d_loss = obj.d_loss(self.d1(codes.detach()).view(-1), self.d1(fake_codes.detach()).view(-1)) + obj.d_loss(
            self.d2(x).view(-1), self.d2(fake_images.detach()).view(-1))
        self.optimize("d", d_loss)
        recon = ((torch.sigmoid(self.decoder(codes)) - x) ** 2).flatten(1).sum(1).mean()
        code_adv = obj.g_loss(self.d1(fake_codes).view(-1), self.d1(codes.detach()).view(-1))
        image_adv = obj.g_loss(self.d2(fake_images).view(-1), self.d2(x).view(-1))
        g_loss = c.recon_weight * recon + c.code_adv_weight * code_adv + c.image_adv_weight * image_adv
        self.optimize("g", g_loss)
        return {"loss_d": float(d_loss.detach()), "recon": float(recon.detach()),
                "code_adv": float(code_adv.detach()), "image_adv": float(image_adv.detach())}

    @torch.no_grad()
    def interpolate(self, a: torch.Tensor, b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decoded images along the straight line between the codes of images ``a`` and ``b`` (1 x 1 x S x S)."""
        was = self.training
        self.eval()
        try:
            za, zb = self.encoder(a.to(self.device)), self.encoder(b.to(self.device))
            t = torch.linspace(0.0, 1.0, steps, device=self.device)[:, None]
            return torch.sigmoid(self.decoder(za + t * (zb - za))).cpu()
        finally:
            self.train(was)

    def architecture(self) -> str:
        c = self.config
        return f"AE-GAN: G1 MLP {c.hidden} -> conv decoder, latent {c.latent_dim}, {describe_network(self.decoder)}"
