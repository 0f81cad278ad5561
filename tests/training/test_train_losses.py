"""Loss values on hand-computed cases: adversarial objectives, pixel and content losses, VGG19 weight loading."""

from __future__ import annotations

import math

import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training.networks.vgg import IMAGENET_STD, VGG19_RELU_INDEX, VGG19Features, load_vgg19_features
from ganserve.training.objectives import get_objective, objectives
from ganserve.training.objectives.content import ContentLoss

ZERO = torch.zeros(4)
LOG2 = math.log(2.0)


def test_objective_registry_names() -> None:
    assert {"minimax", "nonsaturating", "lsgan", "hinge"} <= set(objectives())


@pytest.mark.parametrize(
    "name, real, fake, want_d, want_g",
    [
        # logits 0 -> D = 1/2: BCE terms log 2 each
        ("minimax", ZERO, ZERO, 2 * LOG2, -LOG2),
        ("nonsaturating", ZERO, ZERO, 2 * LOG2, LOG2),
        # real logit 2, fake logit -1: softplus(-2) + softplus(-1); G: softplus(1)
        ("nonsaturating", torch.full((3,), 2.0), torch.full((3,), -1.0),
         math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)), math.log1p(math.exp(1))),
        # least squares: 0.5*(0.5-1)^2 + 0.5*0.25^2 ; G: 0.5*(0.25-1)^2
        ("lsgan", torch.full((2,), 0.5), torch.full((2,), 0.25), 0.5 * 0.25 + 0.5 * 0.0625, 0.5 * 0.5625),
        # hinge: relu(1-0.5) + relu(1+(-2)) = 0.5 ; G: -(-2) = 2
        ("hinge", torch.full((2,), 0.5), torch.full((2,), -2.0), 0.5, 2.0),
    ],
)
def test_objective_values(name, real, fake, want_d, want_g) -> None:
    obj = get_objective(name)
    assert float(obj.d_loss(real, fake)) == pytest.approx(want_d, rel=1e-6)
    assert float(obj.g_loss(fake, real)) == pytest.approx(want_g, rel=1e-6)


def test_pixel_losses_hand_computed() -> None:
    from ganserve.training.objectives.content import PIXEL_LOSSES

    a = torch.tensor([0.0, 0.5, 1.0, 1.0])
    b = torch.tensor([0.0, 0.0, 0.0, 1.0])
    assert float(PIXEL_LOSSES["mse"](a, b)) == pytest.approx((0.25 + 1.0) / 4)
    assert float(PIXEL_LOSSES["l1"](a, b)) == pytest.approx(1.5 / 4)


def test_gradient_fallback_content_loss() -> None:
    loss = ContentLoss(None)
    assert loss.mode == "image_gradients"
    hr = torch.zeros(1, 1, 2, 3)
    sr = torch.tensor([[[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]])
    # x-diffs of sr: [1,-1],[0,0] -> mse 2/4 ; y-diffs: [0,-1,0] -> mse 1/3
    assert float(loss(sr, hr)) == pytest.approx(0.5 + 1.0 / 3.0)
    assert float(loss(sr + 0.3, sr)) == pytest.approx(0.0)  # a colour shift is invisible to gradients
    # a ramp of slope 0.1 along x: every x-difference is 0.1, every y-difference 0 -> 0.1**2; along y the same
    ramp = (0.1 * torch.arange(5.0)).expand(2, 3, 4, 5)
    flat = torch.zeros(2, 3, 4, 5)
    assert float(loss(ramp, flat)) == pytest.approx(0.01, rel=1e-5)
    assert float(loss(flat, ramp)) == pytest.approx(0.01, rel=1e-5)
    assert float(loss(ramp.transpose(2, 3), flat.transpose(2, 3))) == pytest.approx(0.01, rel=1e-5)
    assert float(loss(ramp, -ramp)) == pytest.approx(0.04, rel=1e-5)  # slopes 0.1 and -0.1: difference 0.2, squared


def _torchvision_style_file(tmp_path, last: int):
    net = VGG19Features(last)
    state = {f"features.{k}": v for k, v in net.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # extra keys are ignored
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)
    return net, path


def test_vgg19_loads_torchvision_keys_and_computes_feature_mse(tmp_path) -> None:
    net, path = _torchvision_style_file(tmp_path, last=8)
    loaded = load_vgg19_features(path, layer="2_2")
    assert not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded.features[2].weight, net.features[2].weight)
    loss = ContentLoss(loaded)
    assert loss.mode == "vgg19"
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, y)) > 0.0 and float(loss(x, y)) == pytest.approx(float(loss(y, x)), rel=1e-6)


def _pass_through_vgg_file(tmp_path):
    """A torchvision-format file up to relu1_2 whose two convs copy channel k to channel k (k < 3) by their centre
    tap, zero bias: the features are then relu((x - mean) / std) in channels 0-2 and 0 in the other 61."""
    net = VGG19Features(VGG19_RELU_INDEX["1_2"])
    with torch.no_grad():
        for conv in (net.features[0], net.features[2]):
            conv.weight.zero_()
            conv.bias.zero_()
            for k in range(3):
                conv.weight[k, k, 1, 1] = 1.0
    path = tmp_path / "pass_through.pth"
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, path)
    return path


def test_vgg19_content_loss_closed_form(tmp_path) -> None:
    loss = ContentLoss(load_vgg19_features(_pass_through_vgg_file(tmp_path), layer="1_2"))
    y = 0.6 + 0.2 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))  # above the ImageNet mean
    # an offset c in every pixel moves feature channel k by c / std_k (64 channels, 61 of them zero):
    # MSE = c**2 * sum_k std_k**-2 / 64
    per_c2 = sum(s**-2 for s in IMAGENET_STD) / 64
    assert float(loss(y + 0.1, y)) == pytest.approx(0.01 * per_c2, rel=1e-4)
    assert float(loss(y, y + 0.1)) == pytest.approx(0.01 * per_c2, rel=1e-4)  # symmetric
    assert float(loss(y + 0.1, y)) == pytest.approx(0.0091800, rel=1e-4)  # 0.01 * (0.229**-2 + 0.224**-2 + 0.225**-2) / 64
    assert float(loss(y, y + 0.2)) == pytest.approx(0.04 * per_c2, rel=1e-4)  # squared: twice the offset, 4x
    # both images below the mean: the ReLU zeroes every feature, so different images cost nothing
    dark = 0.35 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    assert float(loss(dark, dark + 0.05)) == 0.0 and float(loss(dark, y)) > 0.0


def test_vgg19_bad_files(tmp_path) -> None:
    with pytest.raises(GanserveError, match="no such file"):
        load_vgg19_features(tmp_path / "none.pth")
    _, path = _torchvision_style_file(tmp_path, last=8)
    with pytest.raises(GanserveError, match="missing features.10.weight"):
        load_vgg19_features(path, layer="5_4")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(GanserveError, match="unreadable"):
        load_vgg19_features(junk)
