"""VAE (Kingma & Welling 2014) on the digits: conv encoder q(z|x) = N(mu, diag sigma^2), reparameterised sample,
conv decoder p(x|z) as Bernoulli logits (BCE) or a Gaussian mean with fixed sigma (MSE), closed-form KL to N(0, I),
and a beta weight on the KL (beta-VAE, Higgins et al. 2017; beta = 1 is the plain VAE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.applications.genbase import DigitsGenApp, DigitsGenConfig
from ganserve.training.networks import describe_network
from ganserve.training.objectives.latent import DECODERS, gaussian_kl, reconstruction_nll, reparameterize
from ganserve.training.registry import register_model


@dataclass
class VAEConfig(DigitsGenConfig):
    """Loss = E[-log p(x|z)] + beta * KL(q(z|x) || N(0, I)), per image; Adam 1e-3 as in the paper's era."""

    decoder: str = "bernoulli"  # bernoulli (BCE on logits) | gaussian (MSE with fixed sigma)
    decoder_sigma: float = 0.1  # Gaussian decoder's standard deviation (pixels in [0, 1])
    beta: float = 1.0
    lr: float = 1e-3
    beta1: float = 0.9


@register_model("vae", VAEConfig)
class VAEApp(DigitsGenApp):
    """Encoder x -> (mu, logvar); decoder z -> logits; samples decode z ~ N(0, I)."""

    config: VAEConfig

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        if config.decoder not in DECODERS:
            raise GanserveError(f"decoder must be one of {', '.join(DECODERS)}, got {config.decoder!r}")
        if config.decoder_sigma <= 0 or config.beta < 0:
            raise GanserveError("decoder_sigma must be > 0 and beta >= 0")
        self.encoder = self.build_encoder(2 * config.latent_dim)
        self.decoder = self.build_decoder(config.latent_dim)

    def sampler(self) -> nn.Module:
        return self.decoder

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        return {"vae": self.adam(params, c.lr)}

    def decoded_output(self, logits: torch.Tensor) -> torch.Tensor:
        """What the likelihood reads: logits (Bernoulli) or the mean in [0, 1] (Gaussian)."""
        return logits if self.config.decoder == "bernoulli" else torch.sigmoid(logits)

    def losses(self, x: torch.Tensor, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-batch mean reconstruction NLL, KL and their beta-weighted sum (the negative ELBO at beta = 1)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = reparameterize(mu, logvar, gen)
        recon = reconstruction_nll(self.decoded_output(self.decoder(z)), x, self.config.decoder,
                                   self.config.decoder_sigma).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": recon + self.config.beta * kl, "recon": recon, "kl": kl}

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        x, _, gen = batch
        parts = self.losses(x.to(self.device), gen)
        self.optimize("vae", parts["loss"])
        return {k: float(v.detach()) for k, v in parts.items()}

    def architecture(self) -> str:
        c = self.config
        return f"VAE decoder ({c.decoder}, beta {c.beta}), latent {c.latent_dim}, {describe_network(self.decoder)}"
