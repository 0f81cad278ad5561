"""Attentive GAN losses (Qian et al. 2018): the attention loss over the recurrent maps and the multi-scale loss
over the autoencoder's outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_loss(attentions: list[torch.Tensor], mask: torch.Tensor, theta: float = 0.8) -> torch.Tensor:
    """sum_t theta^(N - t) * MSE(A_t, M): later time steps weigh more (the paper's L_ATT, t = 1..N)."""
    n = len(attentions)
    return sum(theta ** (n - t) * F.mse_loss(a, mask) for t, a in enumerate(attentions, start=1))  # type: ignore[return-value]


def multiscale_loss(outputs: list[torch.Tensor], clean: torch.Tensor,
                    weights: tuple[float, ...] = (0.6, 0.8, 1.0)) -> torch.Tensor:
    """sum_i lambda_i * MSE(S_i, T_i), T_i the clean image area-resized to the size of output S_i (the paper's L_M)."""
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs for {len(weights)} scale weights")
    total = clean.new_zeros(())
    for out, w in zip(outputs, weights):
        target = clean if out.shape[-2:] == clean.shape[-2:] else F.interpolate(clean, size=out.shape[-2:], mode="area")
        total = total + w * F.mse_loss(out, target)
    return total
