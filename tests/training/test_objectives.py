"""Adversarial objectives: values and gradients on hand-checked logits, the gradient penalty, weight clipping and
each objective's paper recipe."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganserve.core.errors import GanserveError
from ganserve.training.objectives import clip_weights, get_objective, gradient_penalty, objectives


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _grads(loss_fn, a: list[float], b: list[float]) -> tuple[float, list[float], list[float]]:
    ta = torch.tensor(a, requires_grad=True)
    tb = torch.tensor(b, requires_grad=True)
    loss = loss_fn(ta, tb)
    loss.backward()
    zeros = [0.0] * len(b)
    return float(loss.detach()), ta.grad.tolist(), zeros if tb.grad is None else tb.grad.tolist()


def test_every_brief_objective_is_registered() -> None:
    assert {"minimax", "nonsaturating", "lsgan", "hinge", "wgan", "wgan-gp"} <= set(objectives())
    with pytest.raises(GanserveError, match="unknown adversarial objective 'wgan_gp'.*wgan-gp"):
        get_objective("wgan_gp")


@pytest.mark.parametrize("name", ["minimax", "nonsaturating"])
def test_logistic_discriminator_value_and_gradient(name: str) -> None:
    # D loss = mean softplus(-r) + mean softplus(f); d/dr = -sigmoid(-r)/n, d/df = sigmoid(f)/n
    value, g_real, g_fake = _grads(get_objective(name).d_loss, [2.0, -1.0], [0.5, -3.0])
    want = (math.log1p(math.exp(-2)) + math.log1p(math.exp(1))) / 2
    want += (math.log1p(math.exp(0.5)) + math.log1p(math.exp(-3))) / 2
    assert value == pytest.approx(want, rel=1e-6)
    assert g_real == pytest.approx([-_sig(-2.0) / 2, -_sig(1.0) / 2], rel=1e-6)
    assert g_fake == pytest.approx([_sig(0.5) / 2, _sig(-3.0) / 2], rel=1e-6)


def test_minimax_generator_saturates_where_nonsaturating_does_not() -> None:
    # D confidently rejects the fakes (logit -5): log(1 - D) has gradient -sigmoid(f)/n = -0.0067/n,
    # the non-saturating -log D keeps -(1 - sigmoid(f))/n = -0.993/n (Goodfellow et al. 2014, section 3).
    fake = [-5.0, -5.0]
    value, grad, _ = _grads(get_objective("minimax").g_loss, fake, [0.0, 0.0])
    assert value == pytest.approx(-math.log1p(math.exp(-5.0)), rel=1e-6)  # = log(1 - sigmoid(-5))
    assert grad == pytest.approx([-_sig(-5.0) / 2] * 2, rel=1e-6)
    value, grad, _ = _grads(get_objective("nonsaturating").g_loss, fake, [0.0, 0.0])
    assert value == pytest.approx(math.log1p(math.exp(5.0)), rel=1e-6)  # = -log sigmoid(-5)
    assert grad == pytest.approx([-_sig(5.0) / 2] * 2, rel=1e-6)
    assert abs(grad[0]) / _sig(-5.0) * 2 > 100


def test_least_squares_value_and_gradient() -> None:
    obj = get_objective("lsgan")
    value, g_real, g_fake = _grads(obj.d_loss, [0.5, 2.0], [0.25, -1.0])
    assert value == pytest.approx(0.5 * (0.25 + 1.0) / 2 + 0.5 * (0.0625 + 1.0) / 2)
    assert g_real == pytest.approx([(0.5 - 1) / 2, (2.0 - 1) / 2]) and g_fake == pytest.approx([0.25 / 2, -1.0 / 2])
    value, g_fake, _ = _grads(obj.g_loss, [0.25, 3.0], [0.0, 0.0])
    assert value == pytest.approx(0.5 * (0.5625 + 4.0) / 2) and g_fake == pytest.approx([-0.75 / 2, 2.0 / 2])


def test_hinge_value_and_gradient_only_inside_the_margin() -> None:
    obj = get_objective("hinge")
    value, g_real, g_fake = _grads(obj.d_loss, [0.5, 2.0], [-2.0, 0.0])
    assert value == pytest.approx((0.5 + 0.0) / 2 + (0.0 + 1.0) / 2)
    assert g_real == pytest.approx([-0.5, 0.0]) and g_fake == pytest.approx([0.0, 0.5])
    value, g_fake, _ = _grads(obj.g_loss, [-2.0, 1.0], [0.0, 0.0])
    assert value == pytest.approx(0.5) and g_fake == pytest.approx([-0.5, -0.5])


@pytest.mark.parametrize("name", ["wgan", "wgan-gp"])
def test_wasserstein_critic_value_and_gradient(name: str) -> None:
    obj = get_objective(name)
    value, g_real, g_fake = _grads(obj.d_loss, [3.0, 1.0, 2.0], [0.5, -0.5, 0.0])
    assert value == pytest.approx(0.0 - 2.0)  # E[D(fake)] - E[D(real)]
    assert g_real == pytest.approx([-1 / 3] * 3) and g_fake == pytest.approx([1 / 3] * 3)
    value, g_fake, _ = _grads(obj.g_loss, [0.5, -0.5, 2.0], [0.0] * 3)
    assert value == pytest.approx(-2.0 / 3) and g_fake == pytest.approx([-1 / 3] * 3)


def test_gradient_penalty_on_a_linear_critic() -> None:
    # D(x) = w.x has gradient w at every interpolate: penalty = lambda (|w| - 1)^2, d/dw = 2 lambda (|w| - 1) w/|w|
    critic = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    penalty = gradient_penalty(critic, real, fake, weight=10.0)
    assert penalty.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2, rel=1e-6)
    penalty.backward()
    assert critic.weight.grad.view(-1).tolist() == pytest.approx([2 * 10 * 4 * 3 / 5, 2 * 10 * 4 * 4 / 5], rel=1e-6)


def test_gradient_penalty_is_zero_for_unit_gradients_and_uses_interpolates() -> None:
    critic = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.0, 0.8]]))
    assert gradient_penalty(critic, torch.ones(4, 3), torch.zeros(4, 3)).item() == pytest.approx(0.0, abs=1e-10)
    seen: list[torch.Tensor] = []

    def quadratic(x: torch.Tensor) -> torch.Tensor:  # grad = 2x: its norm depends on where x_hat lies
        seen.append(x.detach().clone())
        return (x**2).sum(1)

    real, fake = torch.full((6, 3), 1.0), torch.full((6, 3), -1.0)
    gen = torch.Generator().manual_seed(0)
    penalty = gradient_penalty(quadratic, real, fake, weight=1.0, generator=gen)
    eps = torch.rand((6, 1), generator=torch.Generator().manual_seed(0))
    x_hat = eps * real + (1 - eps) * fake
    assert torch.allclose(seen[0], x_hat)
    assert penalty.item() == pytest.approx(float(((2 * x_hat.norm(dim=1) - 1) ** 2).mean()), rel=1e-6)


def test_weight_clipping_bounds_every_parameter() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.fill_(0.5)
        net[1].bias.fill_(-0.3)
        net[0].bias[0] = 0.004
    clip_weights(net, 0.01)
    c = torch.tensor(0.01)  # float32, as the parameters are
    for p in net.parameters():
        assert bool((p <= c).all()) and bool((p >= -c).all())
    assert net[0].weight[0, 0].item() == c.item() and net[1].bias[0].item() == -c.item()
    assert net[0].bias[0].item() == pytest.approx(0.004)
    with pytest.raises(ValueError):
        clip_weights(net, 0.0)


def test_paper_recipes() -> None:
    wgan, gp = get_objective("wgan").recipe, get_objective("wgan-gp").recipe
    assert (wgan.optimizer, wgan.lr, wgan.n_critic, wgan.clip, wgan.gp_weight) == ("rmsprop", 5e-5, 5, 0.01, 0.0)
    got = (gp.optimizer, gp.lr, gp.betas, gp.n_critic, gp.clip, gp.gp_weight)
    assert got == ("adam", 1e-4, (0.0, 0.9), 5, 0.0, 10.0)
    dc = get_objective("nonsaturating").recipe
    assert (dc.optimizer, dc.lr, dc.betas, dc.n_critic) == ("adam", 2e-4, (0.5, 0.999), 1)
    params = [nn.Parameter(torch.zeros(2))]
    opt = get_objective("wgan").make_optimizer(params)
    assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["lr"] == 5e-5
    opt = get_objective("wgan-gp").make_optimizer(params, lr=3e-4)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.0, 0.9)
    assert opt.param_groups[0]["lr"] == 3e-4
