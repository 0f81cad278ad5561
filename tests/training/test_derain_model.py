"""Attentive GAN: losses on hand-checked tensors, network shapes at two sizes, receptive field, training steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training.application import TrainContext
from ganserve.training.applications.attentive_gan import AttentiveGANApp
from ganserve.training.networks.derain import AttentiveDiscriminator, AttentiveGenerator, ContextualAutoencoder
from ganserve.training.objectives.derain import attention_loss, multiscale_loss
from ganserve.training.registry import make_config

TINY_NETS = dict(arn_channels=4, arn_blocks=1, ae_width=4)
TINY = dict(generator=TINY_NETS, discriminator={"channels": 4}, patch=32, batch_size=2)


def test_attention_loss_weighs_later_steps_more() -> None:
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    half, ones = torch.full_like(mask, 0.5), torch.ones_like(mask)
    # MSE(0.5, M) = 0.25, MSE(1, M) = 0.75: 0.8^1 * 0.25 + 0.8^0 * 0.75
    assert float(attention_loss([half, ones], mask, 0.8)) == pytest.approx(0.95)
    zeros = torch.zeros(1, 1, 2, 2)
    assert float(attention_loss([zeros] * 3, torch.ones(1, 1, 2, 2), 0.8)) == pytest.approx(0.64 + 0.8 + 1.0)
    assert float(attention_loss([half], mask, 0.5)) == pytest.approx(0.25)


def test_multiscale_loss_against_area_resized_targets() -> None:
    clean = torch.arange(16.0).view(1, 1, 4, 4)
    outs = [torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)]
    # targets: mean 7.5 | block means 2.5, 4.5, 10.5, 12.5 | the image itself (mean of k^2 = 77.5)
    expected = 0.6 * 7.5**2 + 0.8 * (2.5**2 + 4.5**2 + 10.5**2 + 12.5**2) / 4 + 1.0 * 77.5
    assert float(multiscale_loss(outs, clean)) == pytest.approx(expected)
    assert expected == pytest.approx(169.85)
    assert float(multiscale_loss([clean[..., ::4, ::4] * 0 + 7.5, torch.zeros(1, 1, 2, 2), clean], clean,
                                 (1.0, 0.0, 5.0))) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        multiscale_loss(outs[:2], clean)


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_generator_and_discriminator_shapes(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    h, w = size
    x = torch.rand(2, 3, h, w)
    with torch.no_grad():
        maps, outs = AttentiveGenerator(**TINY_NETS)(x)
        logits, mask = AttentiveDiscriminator(4)(x)
    assert len(maps) == 4 and all(m.shape == (2, 1, h, w) for m in maps)
    assert all(float(m.min()) >= 0.0 and float(m.max()) <= 1.0 for m in maps)
    assert [tuple(o.shape) for o in outs] == [(2, 3, h // 4, w // 4), (2, 3, h // 2, w // 2), (2, 3, h, w)]
    assert logits.shape == (2,) and mask.shape == (2, 1, h // 4, w // 4)
    assert 0.0 <= float(mask.min()) and float(mask.max()) <= 1.0


def test_residual_autoencoder_starts_near_the_identity() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        outs = ContextualAutoencoder(8, residual=True)(x, torch.full_like(x[:, :1], 0.5))
    assert float((outs[-1] - x).abs().mean()) < 0.05
    assert float((outs[0] - torch.nn.functional.avg_pool2d(x, 4)).abs().mean()) < 0.05


def test_receptive_radius_bounds_the_measured_one() -> None:
    """One output pixel's input gradient reaches at most receptive_radius() pixels away (and most of the way)."""
    torch.manual_seed(0)
    gen = AttentiveGenerator(arn_channels=2, arn_blocks=2, ae_width=2).double()
    radius = gen.receptive_radius()
    size = 2 * radius + 40
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    c = size // 2
    gen(x)[1][-1][0, :, c, c].sum().backward()
    assert x.grad is not None
    ys, xs = np.nonzero(x.grad[0].abs().sum(0).numpy())
    measured = int(max(abs(ys - c).max(), abs(xs - c).max()))
    assert 0.8 * radius <= measured <= radius
    assert radius > 4 * 16  # more than a quarter of the server's default tile overlap covers: not tile-safe


def _app(**over: object) -> AttentiveGANApp:
    torch.manual_seed(0)
    app = AttentiveGANApp(make_config("attentive-gan", {**TINY, **over}))
    app.setup_training(TrainContext(note=lambda m: None))
    return app


def test_gan_step_updates_both_networks_with_finite_losses() -> None:
    app = _app()
    g0 = [p.detach().clone() for p in app.generator.parameters()]
    d0 = [p.detach().clone() for p in app.discriminator.parameters()]  # type: ignore[union-attr]
    losses = app.train_step(app.make_batch(0, 0, 1), 0)
    assert set(losses) == {"loss_d", "loss_map", "loss_g", "loss_att", "loss_ms", "loss_perc", "loss_adv"}
    assert all(np.isfinite(v) for v in losses.values())
    assert losses["loss_g"] == pytest.approx(0.01 * losses["loss_adv"] + losses["loss_att"] + losses["loss_ms"]
                                             + losses["loss_perc"], rel=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(g0, app.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, app.discriminator.parameters()))  # type: ignore[union-attr]
    assert "image_gradients" in app.facts["content_loss"]


def test_baseline_is_the_autoencoder_alone_on_l1() -> None:
    app = _app(baseline_l1=True)
    assert app.discriminator is None and app.generator.arn is None
    assert set(app.optimizers()) == {"g"}
    losses = app.train_step(app.make_batch(0, 0, 1), 0)
    assert set(losses) == {"loss_l1"} and 0.0 < losses["loss_l1"] < 0.5
    rainy = app.make_batch(1, 0, 1)[0].numpy()
    out, att = app.predict(rainy)
    assert att is None and out.shape == rainy.shape
    gan = _app()
    ae_keys = {k for k in gan.generator.state_dict() if k.startswith("autoencoder.")}
    assert ae_keys == set(app.generator.state_dict())  # literally the same autoencoder


def test_evaluation_is_deterministic_and_names_its_baseline() -> None:
    app = _app()
    first, second = app.evaluate(), app.evaluate()
    for key in ("psnr", "ssim", "rainy_psnr", "rainy_ssim", "psnr_gain", "attention_iou"):
        assert first[key] == second[key]
    assert first["psnr_gain"] == pytest.approx(first["psnr"] - first["rainy_psnr"])
    assert 15.0 < first["rainy_psnr"] < 30.0 and first["eval_images"] == 8.0
    grid = app.sample_grid()
    assert grid.shape == (4 * 128, 4 * 128, 3) and grid.dtype == np.uint8
    demo = app.demo_examples(3)
    assert [d.name for d in demo] == ["held_out_0", "held_out_1", "held_out_2"]
    assert demo[0].image.shape == demo[0].truth.shape == (128, 128, 3) and demo[0].image.dtype == np.uint8
    assert not np.array_equal(demo[0].image, demo[0].truth)


@pytest.mark.parametrize("bad", [{"patch": 30}, {"scale_weights": "1,2"}, {"scale_weights": "a,b,c"},
                                 {"vgg_layer": "9_9"}, {"generator": {"time_steps": 0}}, {"time_steps": 0},
                                 {"adversarial": "nope"}])
def test_bad_config_is_a_clear_error(bad: dict) -> None:
    with pytest.raises(GanserveError):
        AttentiveGANApp(make_config("attentive-gan", {**TINY, **bad}))
