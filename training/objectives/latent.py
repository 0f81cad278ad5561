"""Latent-variable terms: the VAE's reparameterisation, closed-form Gaussian KL and decoder likelihoods, and the
WAE's maximum mean discrepancy with the inverse multiquadratic kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DECODERS = ("gaussian", "bernoulli")
# WAE (Tolstikhin et al. 2018) sums the IMQ kernel over these multiples of C = 2 * d * sigma_z^2.
IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I): a sample whose gradient flows to mu and logvar (Kingma & Welling 2014)."""
    eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) per sample, summed over latent dims: -1/2 sum(1 + logvar - mu^2 - var)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).flatten(1).sum(dim=1)


def reconstruction_nll(decoded: torch.Tensor, x: torch.Tensor, decoder: str, sigma: float = 1.0) -> torch.Tensor:
    """-log p(x|z) per sample up to a constant: Gaussian (decoded = mean, ||x - mean||^2 / (2 sigma^2)) or
    Bernoulli (decoded = logits, binary cross-entropy with x in [0, 1] as soft targets)."""
    if decoder == "gaussian":
        return ((decoded - x) ** 2).flatten(1).sum(dim=1) / (2.0 * sigma**2)
    if decoder == "bernoulli":
        return F.binary_cross_entropy_with_logits(decoded, x, reduction="none").flatten(1).sum(dim=1)
    raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")


def imq_mmd(
    z: torch.Tensor, prior: torch.Tensor, sigma2: float = 1.0, scales: tuple[float, ...] = IMQ_SCALES
) -> torch.Tensor:
    """Unbiased MMD^2 between codes ``z`` and prior samples with k(x, y) = C / (C + ||x - y||^2), summed over
    C = s * 2 * d * sigma2 for each scale s (the WAE-MMD penalty)."""
    n, d = z.shape
    if prior.shape != z.shape or n < 2:
        raise ValueError(f"imq_mmd needs two same-shape batches, n >= 2; got {tuple(z.shape)}, {tuple(prior.shape)}")
    dzz = torch.cdist(z, z).pow(2)
    dpp = torch.cdist(prior, prior).pow(2)
    dzp = torch.cdist(z, prior).pow(2)
    off = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    total = z.new_zeros(())
    for s in scales:
        c = s * 2.0 * d * sigma2
        kzz, kpp, kzp = c / (c + dzz), c / (c + dpp), c / (c + dzp)
        total = total + ((kzz + kpp) * off).sum() / (n * (n - 1)) - 2.0 * kzp.mean()
    return total
