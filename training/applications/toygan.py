"""GANs on the 2-D ring of 8 Gaussians: one MLP generator/discriminator pair trained with any adversarial
objective and its paper recipe, recording samples, metrics and the generator's gradient norm over training.

This is how the objectives are compared (benchmarks/genlib.py): same networks, same data, same number of generator
updates; only the objective and its recipe (optimiser, n_critic, clipping, gradient penalty) differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ganserve.training.data.toy import sample_ring
from ganserve.training.eval.gen_metrics import toy_metrics
from ganserve.training.objectives import clip_weights, get_objective, gradient_penalty

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
    """The state at one generator step: fixed-noise samples, their metrics, the last losses, and the norm of G's
    loss gradient on the fixed noise (small = the generator gets no signal from D)."""

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
    d_head_start: int = 0
    seconds: float = 0.0
    snapshots: list[ToySnapshot] = field(default_factory=list)


def train_toy(
    objective: str, steps: int, *, batch: int = 256, seed: int = 0, snapshot_every: int = 0, eval_samples: int = 2000,
    hidden: int = 128, d_head_start: int = 0,
) -> ToyRun:
    """Train G and D on the ring for ``steps`` generator updates with ``objective``'s recipe; snapshots at
    step 0, every ``snapshot_every`` steps (0 = only at the end) and at the end. ``d_head_start`` discriminator
    updates against the initial generator come first: the "D wins early" case."""
    import time

    obj = get_objective(objective)
    r = obj.recipe
    torch.manual_seed(seed)
    g, d = toy_mlp(NOISE_DIM, 2, hidden), toy_mlp(2, 1, hidden)
    opt_g, opt_d = obj.make_optimizer(g.parameters()), obj.make_optimizer(d.parameters())
    data_gen = torch.Generator().manual_seed(seed + 1)
    fixed = torch.randn((eval_samples, NOISE_DIM), generator=torch.Generator().manual_seed(seed + 2))
    run = ToyRun(objective, steps, d_head_start)
    d_loss = g_loss = torch.zeros(())
    real_fixed = sample_ring(eval_samples, torch.Generator().manual_seed(seed + 3))

    def snapshot(step: int) -> None:
        g.zero_grad(set_to_none=True)
        samples = g(fixed)
        obj.g_loss(d(samples).view(-1), d(real_fixed).view(-1)).backward()
        norm = float(torch.sqrt(sum((p.grad**2).sum() for p in g.parameters())))
        g.zero_grad(set_to_none=True)
        d.zero_grad(set_to_none=True)
        samples = samples.detach()
        run.snapshots.append(ToySnapshot(step, samples, toy_metrics(samples), float(d_loss), float(g_loss), norm))

    def critic_step() -> torch.Tensor:
        real = sample_ring(batch, data_gen)
        fake = g(torch.randn((batch, NOISE_DIM), generator=data_gen)).detach()
        loss = obj.d_loss(d(real).view(-1), d(fake).view(-1))
        total = loss + (gradient_penalty(d, real, fake, r.gp_weight, data_gen) if r.gp_weight else 0.0)
        opt_d.zero_grad(set_to_none=True)
        total.backward()
        opt_d.step()
        if r.clip:
            clip_weights(d, r.clip)
        return loss.detach()

    t0 = time.perf_counter()
    for _ in range(d_head_start):
        d_loss = critic_step()
    snapshot(0)
    for step in range(1, steps + 1):
        for _ in range(r.n_critic):
            d_loss = critic_step()
        fake = g(torch.randn((batch, NOISE_DIM), generator=data_gen))
        g_loss = obj.g_loss(d(fake).view(-1), d(real_fixed[:batch]).view(-1))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        g_loss = g_loss.detach()
        if step == steps or (snapshot_every and step % snapshot_every == 0):
            snapshot(step)
    run.seconds = time.perf_counter() - t0
    return run
