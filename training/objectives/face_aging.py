"""Face-aging generator losses: identity (cosine distance of the loss networks' identity features), age
(cross-entropy of their age heads against the target group), reconstruction (asking for the input's own group
returns the input), and the jitter that keeps the loss networks from rewarding pixel-exact tricks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganserve.training.networks.face_aging import FaceNet


def identity_loss(features_out: torch.Tensor, features_in: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine similarity between (L2-normalised) identity features of output and input."""
    return (1.0 - (F.normalize(features_out, dim=1) * F.normalize(features_in, dim=1)).sum(dim=1)).mean()


def age_loss(age_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the loss network's age-group logits on the output against the target group."""
    return F.cross_entropy(age_logits, targets.long())


def ensemble_losses(nets: tuple[FaceNet, ...], pair: torch.Tensor, n: int,
                    targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Identity and age losses averaged over the loss networks, for a batch of ``n`` outputs then their ``n`` inputs;
    also the share of (output, network) verdicts that name the target group."""
    ident = age = pair.new_zeros(())
    hits = 0.0
    for net in nets:
        emb, _, age_logits = net(pair)
        assert age_logits is not None
        ident = ident + identity_loss(emb[:n], emb[n:].detach())
        age = age + age_loss(age_logits[:n], targets)
        hits += float((age_logits[:n].argmax(1) == targets).float().mean())
    return ident / len(nets), age / len(nets), hits / len(nets)


def reconstruction_loss(output_own_age: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """L1 between the input and the output asked for the input's own age group (that request returns the input)."""
    return F.l1_loss(output_own_age, image)


def jitter(x: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random mirror and a small shift of the whole batch, so the age/identity losses reward no pixel-exact trick."""
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x.flip(3) if bool(torch.rand((), generator=generator) < 0.5) else x
