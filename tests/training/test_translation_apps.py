"""pix2pix and CycleGAN applications: losses on hand-checked tensors, training steps, evaluation, configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training import registry
from ganserve.training.application import TrainContext
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.trainer import train

P2P = {"depth": 5, "ngf": 4, "max_mult": 2, "ndf": 4, "d_max_mult": 2, "crop": 32, "batch_size": 2,
       "log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}
CYC = {"ngf": 4, "blocks": 1, "ndf": 4, "d_max_mult": 2, "crop": 32, "batch_size": 2, "pool_size": 3,
       "log_every": 1, "eval_every": 0, "sample_every": 0, "ckpt_every": 0}


def _constant_discriminator(d: torch.nn.Module, logit: float) -> None:
    """Every weight 0 and the last bias = logit: the discriminator answers ``logit`` everywhere."""
    with torch.no_grad():
        for p in d.parameters():
            p.zero_()
        d.model[-1].bias.fill_(logit)


def _f(t: torch.Tensor) -> float:
    return float(t.detach())


def _app(name: str, **overrides):
    app = registry.build(name, overrides)
    app.setup_training(TrainContext(note=lambda _m: None))
    return app


def test_pix2pix_losses_hand_checked() -> None:
    torch.manual_seed(0)
    app = _app("pix2pix", **P2P)
    _constant_discriminator(app.discriminator, 0.0)
    a, b = torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 32, 32)
    fake = torch.full((2, 3, 32, 32), 0.25)
    # D(x) = 0 everywhere: BCE real + fake = 2 log 2, halved; nonsaturating G = log 2; L1 = 0.25
    assert _f(app.d_loss(a, b, fake)) == pytest.approx(math.log(2))
    parts = app.g_losses(a, b, fake)
    assert _f(parts["adv"]) == pytest.approx(math.log(2))
    assert _f(parts["l1"]) == pytest.approx(0.25)
    assert _f(parts["g"]) == pytest.approx(math.log(2) + 100 * 0.25)
    _constant_discriminator(app.discriminator, 2.0)
    assert _f(app.g_losses(a, b, fake)["adv"]) == pytest.approx(math.log1p(math.exp(-2.0)))
    l1_only = _app("pix2pix", **P2P, gan_weight=0.0, l1_weight=3.0)
    parts = l1_only.g_losses(a, b, fake)
    assert set(parts) == {"g", "l1"} and _f(parts["g"]) == pytest.approx(0.75)


def test_cyclegan_losses_hand_checked() -> None:
    torch.manual_seed(0)
    app = _app("cyclegan", **CYC)
    for d in (app.d_a, app.d_b):
        _constant_discriminator(d, 0.25)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    parts = app.g_losses(a, b)
    # least squares: G term 0.5 (D - 1)^2 = 0.5 * 0.5625 per direction; D term 0.5 (D - 1)^2 + 0.5 D^2
    assert _f(parts["adv_ab"]) == pytest.approx(0.28125) and _f(parts["adv_ba"]) == pytest.approx(0.28125)
    assert _f(app.d_loss(app.d_a, a, parts["fake_a"])) == pytest.approx(0.5 * 0.5625 + 0.5 * 0.0625)
    with torch.no_grad():
        cycle = (app.g_ba(app.g_ab(a)) - a).abs().mean() + (app.g_ab(app.g_ba(b)) - b).abs().mean()
        identity = (app.g_ab(b) - b).abs().mean() + (app.g_ba(a) - a).abs().mean()
    assert _f(parts["cycle"]) == pytest.approx(float(cycle), rel=1e-5)
    assert _f(parts["identity"]) == pytest.approx(float(identity), rel=1e-5)
    # total: 2 * (adversarial both ways) + 10 * cycle + 0.5 * 10 * identity (the paper's weights)
    assert _f(parts["g"]) == pytest.approx(2 * 0.5625 + 10 * float(cycle) + 5 * float(identity), rel=1e-5)


def test_pix2pix_trains_and_l1_only_leaves_discriminator_alone() -> None:
    torch.manual_seed(0)
    app = _app("pix2pix", **P2P, lr=1e-3)
    batch = app.make_batch(0, 0, 1)  # one batch, fitted repeatedly: its L1 must fall
    first = app.train_step(batch, 0)
    assert set(first) == {"loss_d", "loss_g", "loss_adv", "loss_l1"}
    for s in range(1, 20):
        last = app.train_step(batch, s)
    assert last["loss_l1"] < 0.9 * first["loss_l1"]
    l1_only = _app("pix2pix", **P2P, gan_weight=0.0)
    before = {k: v.clone() for k, v in l1_only.discriminator.state_dict().items()}
    losses = l1_only.train_step(l1_only.make_batch(0, 0, 1), 0)
    assert set(losses) == {"loss_g", "loss_l1"}
    assert all(torch.equal(before[k], v) for k, v in l1_only.discriminator.state_dict().items())


def test_cyclegan_step_updates_both_sides_and_fills_pools() -> None:
    torch.manual_seed(0)
    app = _app("cyclegan", **CYC)
    g_before = app.g_ab.model[1].weight.clone()
    d_before = app.d_b.model[0].weight.clone()
    for s in range(3):
        losses = app.train_step(app.make_batch(s, 0, 1), s)
    assert {"loss_g", "loss_cycle", "loss_identity", "loss_d_a", "loss_d_b"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())
    assert not torch.equal(g_before, app.g_ab.model[1].weight) and not torch.equal(d_before, app.d_b.model[0].weight)
    assert len(app.pool_a.images) == len(app.pool_b.images) == 3


def test_batches_are_pure_functions_of_seed_and_step() -> None:
    app = _app("cyclegan", **CYC)
    a1, b1, _ = app.make_batch(7, 0, 1)
    a2, b2, _ = app.make_batch(7, 0, 1)
    a3, _, _ = app.make_batch(8, 0, 1)
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)


def test_evaluations_are_deterministic_and_baselines_are_the_true_transform(tmp_path) -> None:
    ckpt = train("cyclegan", CYC, steps=2, out_dir=tmp_path / "cyc", progress=False)
    app = build_from_checkpoint(ckpt)
    first, second = app.evaluate(), app.evaluate()
    assert first == second
    # identity baseline: the input itself against the true transform, the same number both ways
    assert first["identity_psnr_ab"] == pytest.approx(first["identity_psnr_ba"])
    assert 10.0 < first["identity_psnr_ab"] < 25.0 and first["eval_images"] == 2.0
    assert {"psnr_ab", "ssim_ab", "l1_ab", "sharpness_ab", "psnr_ba", "cycle_l1_a", "cycle_l1_b"} <= set(first)
    p2p = build_from_checkpoint(train("pix2pix", P2P, steps=1, out_dir=tmp_path / "p2p", progress=False))
    figures = p2p.evaluate()
    assert figures == p2p.evaluate()
    assert figures["identity_psnr"] < 8.0 < figures["psnr"]  # edges are far from the photo; any output is nearer
    assert 0.0 <= figures["ssim"] <= 1.0
    # L1 recomputed here, not through the evaluation: mean |output - photo| per held-out image, then over images, with
    # the output from the generator itself ([-1, 1] in and out, mapped to [0, 1] and clamped); the identity
    # baseline's L1 is the edges image's own distance from the photo
    model_l1, identity_l1 = [], []
    p2p.generator.eval()
    with torch.no_grad():
        for edges, photo in p2p.held_out():
            x = torch.from_numpy(np.array(edges)).permute(2, 0, 1)[None].double() / 255.0
            truth = torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].double() / 255.0
            out = ((p2p.generator(x.float() * 2 - 1).double() + 1) / 2).clamp(0, 1)
            model_l1.append(float((out - truth).abs().mean()))
            identity_l1.append(float((x - truth).abs().mean()))
    assert len(model_l1) == figures["eval_images"] == 2.0
    assert figures["l1"] == pytest.approx(sum(model_l1) / 2, rel=1e-5)
    assert figures["identity_l1"] == pytest.approx(sum(identity_l1) / 2, rel=1e-6)
    assert figures["l1"] != pytest.approx(figures["identity_l1"], rel=1e-2)  # the two really are different images


def test_demo_examples_are_held_out_requests_with_truth() -> None:
    p2p = registry.build("pix2pix", P2P)
    examples = p2p.demo_examples(5)
    assert [e.name for e in examples] == ["flower_edges", "coffee_edges"]
    assert examples[0].image.shape == examples[0].truth.shape == (256, 256, 3)
    assert set(np.unique(examples[0].image)) <= {0, 255}
    cyc = registry.build("cyclegan", {**CYC, "export_direction": "ba"})
    (example,) = cyc.demo_examples(1)
    assert example.name == "flower_ba"
    from ganserve.training.data.unpaired import dusk_uint8

    assert np.array_equal(example.image, dusk_uint8(example.truth))  # B -> A: the request is the dusk rendering


@pytest.mark.parametrize("name,overrides,message", [
    ("pix2pix", {"crop": 48}, "multiple of the generator's spatial multiple 32"),
    ("pix2pix", {"norm": "group"}, "norm must be one of"),
    ("pix2pix", {"gan_weight": 0.0, "l1_weight": 0.0}, "nothing to train"),
    ("pix2pix", {"direction": "up"}, "AtoB or BtoA"),
    ("cyclegan", {"export_direction": "ac"}, "export_direction must be ab or ba"),
    ("cyclegan", {"crop": 30}, "multiple of 4"),
    ("cyclegan", {"adversarial": "nope"}, "unknown adversarial objective"),
    ("cyclegan", {"g_norm": "group"}, "norm must be one of"),
    ("cyclegan", {"generator": {"type": "unet"}}, "unknown argument.*blocks"),
    ("pix2pix", {"discriminator": {"in_channels": 3}}, "in_channels=3 does not fit here, which needs in_channels=6"),
])
def test_bad_configs_are_clear_errors(name: str, overrides: dict, message: str) -> None:
    base = P2P if name == "pix2pix" else CYC
    with pytest.raises(GanserveError, match=message):
        registry.build(name, {**base, **overrides})


def test_export_direction_override_rebuilds_the_other_generator(tmp_path) -> None:
    ckpt = train("cyclegan", CYC, steps=1, out_dir=tmp_path / "cyc", progress=False)
    app = build_from_checkpoint(ckpt, {"export_direction": "ba"})
    spec = app.export_spec()
    assert spec.quality_key == "psnr_ba" and spec.tile_safe is False and spec.spatial_multiple == 4
    x = torch.from_numpy(spec.parity_inputs[1]["image"])
    with torch.no_grad():
        expected = ((app.g_ba(x * 2 - 1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(spec.module(x), expected)
    with pytest.raises(GanserveError, match="unknown config key"):
        build_from_checkpoint(ckpt, {"export_way": "ba"})


def test_cyclegan_generator_norm_and_residual_options_reach_both_generators() -> None:
    app = registry.build("cyclegan", {**CYC, "norm": "instance", "g_norm": "none", "residual": True})
    for g in (app.g_ab, app.g_ba):
        assert g.residual and not any(isinstance(m, torch.nn.InstanceNorm2d) for m in g.modules())
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in app.d_a.modules())  # D keeps `norm`
    assert "input + clipped correction" in app.export_spec().architecture
