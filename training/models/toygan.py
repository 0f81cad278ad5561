"""GANs on the 2-D ring of 8 Gaussians: one MLP generator/discriminator pair trained with any adversarial
objective and its paper recipe, recording samples, metrics and the generator's gradient norm over training.

This is how the objectives are compared (benchmarks/genlib.py): same networks, same data, same number of generator
updates; only the objective and its recipe (optimiser, n_critic, clipping, gradient penalty) differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from training.data.toy import sample_ring
from training.eval.gen_metrics import toy_metrics
from training.objectives import clip_weights, get_objective, gradient_penalty

NOISE_DIM = 2


def toy_mlp(in_dim: int, out_dim: int, hidden: int = 128, layers: int = 3) -> nn.Sequential:
    """ReLU MLP with ``layers`` hidden layers (the usual ring-of-Gaussians networks)."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


@dataclass
class ToySnapshot:
    """The state at one generator step: fixed-noise samples, their metrics, losses and G's gradient norm."""

    step: int
    samples: torch.Tensor
    metrics: dict[str, float]
    d_loss: float
    g_loss: float
    g_grad_norm: float


@dataclass
class ToyRun:
    objective: str
    steps: int
    seconds: float = 0.0
    snapshots: list[ToySnapshot] = field(default_factory=list)


def train_toy(
    objective: str, steps: int, *, batch: int = 256, seed: int = 0, snapshot_every: int = 0, eval_samples: int = 2000,
    hidden: int = 128,
) -> ToyRun:
    """Train G and D on the ring for ``steps`` generator updates with ``objective``'s recipe; snapshots at
    step 0, every ``snapshot_every`` steps (0 = only at the end) and at the end."""
    import time

    obj = get_objective(objective)
    r = obj.recipe
    torch.manual_seed(seed)
    g, d = toy_mlp(NOISE_DIM, 2, hidden), toy_mlp(2, 1, hidden)
    opt_g, opt_d = obj.make_optimizer(g.parameters()), obj.make_optimizer(d.parameters())
    data_gen = torch.Generator().manual_seed(seed + 1)
    fixed = torch.randn((eval_samples, NOISE_DIM), generator=torch.Generator().manual_seed(seed + 2))
    run = ToyRun(objective, steps)
    d_loss = g_loss = torch.zeros(())
    grad_norm = 0.0

    def snapshot(step: int) -> None:
        with torch.no_grad():
            samples = g(fixed)
        run.snapshots.append(ToySnapshot(step, samples, toy_metrics(samples), float(d_loss), float(g_loss), grad_norm))

    t0 = time.perf_counter()
    snapshot(0)
    for step in range(1, steps + 1):
        for _ in range(r.n_critic):
            real = sample_ring(batch, data_gen)
            fake = g(torch.randn((batch, NOISE_DIM), generator=data_gen)).detach()
            d_loss = obj.d_loss(d(real).view(-1), d(fake).view(-1))
            total = d_loss + (gradient_penalty(d, real, fake, r.gp_weight, data_gen) if r.gp_weight else 0.0)
            opt_d.zero_grad(set_to_none=True)
            total.backward()
            opt_d.step()
            if r.clip:
                clip_weights(d, r.clip)
        fake = g(torch.randn((batch, NOISE_DIM), generator=data_gen))
        g_loss = obj.g_loss(d(fake).view(-1), d(real).view(-1))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        grad_norm = float(torch.sqrt(sum((p.grad**2).sum() for p in g.parameters())))
        opt_g.step()
        if step == steps or (snapshot_every and step % snapshot_every == 0):
            d_loss, g_loss = d_loss.detach(), g_loss.detach()
            snapshot(step)
    run.seconds = time.perf_counter() - t0
    return run
