"""SRResNet's bicubic_skip: the network is a residual over bicubic upscaling, so it starts at the baseline."""

from __future__ import annotations

import torch

from ganserve.training.data.images import upscale_bicubic
from ganserve.training.networks.sr import SRResNet
from ganserve.training.registry import build


def test_zero_residual_is_exactly_bicubic() -> None:
    net = SRResNet(scale=4, blocks=1, channels=8, batch_norm=False, bicubic_skip=True).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        x = torch.rand(2, 3, 12, 10)
        assert torch.allclose(net(x).clamp(0, 1), upscale_bicubic(x, 4), atol=1e-6)


def test_skip_starts_near_bicubic_and_plain_does_not() -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 16, 16)
    ref = upscale_bicubic(x, 4)
    with torch.no_grad():
        skip = SRResNet(4, 1, 8, False, bicubic_skip=True).eval()(x).clamp(0, 1)
        plain = SRResNet(4, 1, 8, False, bicubic_skip=False).eval()(x).clamp(0, 1)
    assert (skip - ref).abs().mean() < 0.05 < (plain - ref).abs().mean()


def test_config_flag_reaches_the_generator() -> None:
    app = build("srresnet", {"blocks": 1, "channels": 8, "bicubic_skip": True})
    assert app.generator.bicubic_skip and not build("srresnet", {"blocks": 1, "channels": 8}).generator.bicubic_skip
