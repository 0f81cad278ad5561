"""Semi-supervised GAN losses (Salimans et al. 2016, section 5): the K logits of the discriminator imply a
(K+1)-th "fake" class with logit 0, so D(x) = Z / (Z + 1) with Z = sum_k exp(l_k); plus the entropy and consistency
terms of later work, off by default."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the labelled images over the K real classes (the fake class cannot be the label)."""
    return F.cross_entropy(logits, labels)


def log_d_real(logits: torch.Tensor) -> torch.Tensor:
    """log D(x) per image, with D(x) = Z / (Z + 1) and Z = sum_k exp(l_k): logsumexp(l) - softplus(logsumexp(l))."""
    lse = torch.logsumexp(logits, dim=1)
    return lse - F.softplus(lse)


def unsupervised_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[-log D(x)] over unlabelled images + E[-log(1 - D(G(z)))] over generated ones).

    -log(1 - D) = log(Z + 1) = softplus(logsumexp(l)); both terms are computed in log space so they never overflow.
    """
    fake_term = F.softplus(torch.logsumexp(logits_fake, dim=1))
    return 0.5 * (-log_d_real(logits_real).mean() + fake_term.mean())


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of p(y | x, real) = softmax(logits) over a batch (in nats): low when the classifier is confident.

    Not in Salimans et al.; an unlabelled-data term of the later GAN-based semi-supervised work (Dai et al. 2017,
    "Good Semi-supervised Learning that Requires a Bad GAN"), off unless ``entropy_weight`` > 0.
    """
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over images of the squared distance between the class distributions of two views of the same images.

    Not in Salimans et al.: the consistency regularisation of the discriminator in CR-GAN (Zhang et al. 2020), here
    on p(y | x, real) as in the Pi-model (Laine & Aila 2017); the views differ by the discriminator's own noise and,
    with ``consistency_shift``, a translation. Off unless ``consistency_weight`` > 0.
    """
    return (F.softmax(logits_a, dim=1) - F.softmax(logits_b, dim=1)).pow(2).sum(dim=1).mean()


def feature_matching_loss(features_real: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """Mean over feature units of the squared difference of batch-mean features (real vs generated)."""
    return (features_real.mean(dim=0) - features_fake.mean(dim=0)).pow(2).mean()
