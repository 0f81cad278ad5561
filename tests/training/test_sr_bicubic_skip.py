"""SRResNet's bicubic_skip: the network is a residual over bicubic upscaling, so it starts at the baseline."""

from __future__ import annotations

import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training.data.images import upscale_bicubic
import torch.nn.functional as F

from ganserve.training.networks.sr import BicubicUpsample, PhaseTail, SRResNet
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.registry import build
from ganserve.training.trainer import train


def test_zero_residual_is_exactly_bicubic() -> None:
    net = SRResNet(scale=4, blocks=1, channels=8, batch_norm=False, bicubic_skip=True).eval()
    with torch.no_grad():
        net.tail.weight.zero_()
        x = torch.rand(2, 3, 12, 10)
        assert torch.allclose(net(x).clamp(0, 1), upscale_bicubic(x, 4), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_bicubic_as_a_convolution_is_torchs_bicubic(scale: int) -> None:
    """The rewrite the exported graph runs (edge pad, depthwise 5x5, pixel shuffle) is F.interpolate's bicubic,
    border pixels and one-pixel images included, up to float rounding; the kernel is not in the state dict."""
    up = BicubicUpsample(scale)
    torch.manual_seed(scale)
    for shape in [(1, 3, 1, 1), (2, 3, 2, 5), (1, 3, 17, 9), (1, 3, 40, 33)]:
        x = torch.rand(*shape) * 2 - 0.5  # values past [0, 1] too: bicubic overshoots, the rewrite must as well
        want = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        assert float((up(x) - want).abs().max()) < 2e-6, shape
    net = SRResNet(scale=scale, blocks=1, channels=8, batch_norm=False, bicubic_skip=True)
    assert not [k for k in net.state_dict() if "bicubic" in k]


def test_exported_skip_is_pad_conv_depth_to_space_not_a_cubic_resize(tmp_path) -> None:
    import onnx

    net = SRResNet(scale=4, blocks=1, channels=8, batch_norm=False, bicubic_skip=True).eval()
    torch.onnx.export(net, (torch.rand(1, 3, 16, 16),), tmp_path / "sr.onnx", opset_version=17, dynamo=False,
                      input_names=["lr"], dynamic_axes={"lr": {2: "h", 3: "w"}})
    ops = {n.op_type for n in onnx.load(tmp_path / "sr.onnx").graph.node}
    assert "Resize" not in ops and {"Pad", "DepthToSpace"} <= ops


@pytest.mark.parametrize("scale", [2, 4])
def test_export_form_computes_the_same_function_on_any_size(scale: int) -> None:
    """for_export's PhaseTail (the 9 x 9 tail on the pre-shuffle map) against the trained form, borders and a
    one-pixel input included; the trained network itself is left as it was."""
    torch.manual_seed(scale)
    net = SRResNet(scale=scale, blocks=1, channels=8, batch_norm=False, bicubic_skip=True).eval()
    with torch.no_grad():
        for prelu in [m for m in net.modules() if isinstance(m, torch.nn.PReLU)]:
            prelu.weight.uniform_(-0.5, 0.5)  # distinct slopes per channel, so a wrong repeat would show
        net.tail.weight.normal_()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = net.for_export()
    assert isinstance(fast.tail, PhaseTail) and not any(isinstance(m, torch.nn.PixelShuffle) for m in fast.upsample[-1:])
    for shape in [(1, 3, 1, 1), (2, 3, 7, 12), (1, 3, 20, 20)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            assert float((fast(x) - net(x)).abs().max()) < 1e-4 * float(net(x).abs().max()), shape
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert SRResNet(4, 1, 8, False, upsample="subpixel").for_export().tail.__class__ is torch.nn.PixelShuffle


@pytest.mark.parametrize("r,k", [(2, 3), (3, 5), (4, 9)])
def test_phase_tail_is_the_shuffled_convolution_for_other_factors_and_kernels(r: int, k: int) -> None:
    torch.manual_seed(r * k)
    prelu, conv = torch.nn.PReLU(4), torch.nn.Conv2d(4, 3, k, padding=k // 2)
    with torch.no_grad():
        prelu.weight.uniform_(-0.5, 0.5)
    y = torch.rand(1, 4 * r * r, 6, 5) - 0.5
    with torch.no_grad():
        want = conv(prelu(F.pixel_shuffle(y, r)))
        got = PhaseTail(prelu, conv, r)(y)
    assert got.shape == want.shape and float((got - want).abs().max()) < 1e-5
    for bad in (torch.nn.Conv2d(4, 3, 3, stride=2, padding=1), torch.nn.Conv2d(4, 3, 4, padding=1)):
        with pytest.raises(GanserveError, match="plain stride-1, size-keeping"):
            PhaseTail(torch.nn.PReLU(4), bad, 2)


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


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_subpixel_end_is_one_convolution_at_the_input_size_and_starts_at_bicubic(scale: int) -> None:
    net = SRResNet(scale, blocks=1, channels=8, batch_norm=False, bicubic_skip=True, upsample="subpixel").eval()
    convs = [m for m in net.upsample if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].out_channels == 3 * scale * scale
    assert isinstance(net.tail, torch.nn.PixelShuffle) and not list(net.tail.parameters())
    x = torch.rand(2, 3, 6, 5)
    with torch.no_grad():
        assert net(x).shape == (2, 3, 6 * scale, 5 * scale)
        convs[0].weight.zero_()  # a zero residual: exactly the bicubic baseline, as with the paper's end
        assert torch.allclose(net(x).clamp(0, 1), upscale_bicubic(x, scale), atol=1e-6)


def test_subpixel_costs_less_than_the_paper_end_and_is_named_in_the_description() -> None:
    paper, sub = SRResNet(4, 2, 16, False, True), SRResNet(4, 2, 16, False, True, upsample="subpixel")
    count = lambda n: sum(p.numel() for p in n.parameters())  # noqa: E731
    body = count(paper.head) + count(paper.body) + count(paper.body_tail)
    assert count(sub) - body == 16 * 48 * 9 + 48 < count(paper) - body  # one 3x3 conv to 3 * 4**2 channels
    assert "sub-pixel" in sub.describe() and "sub-pixel" not in paper.describe()


def test_the_upsample_choice_reaches_the_generator_and_a_wrong_one_is_refused() -> None:
    app = build("srresnet", {"generator": {"blocks": 1, "channels": 8, "upsample": "subpixel"}})
    assert app.generator.upsample_kind == "subpixel"
    with pytest.raises(GanserveError, match="upsample must be one of paper, subpixel"):
        build("srresnet", {"generator": {"blocks": 1, "channels": 8, "upsample": "nearest"}})


def test_channels_last_training_runs_in_nhwc_and_learns_what_contiguous_training_learns(tmp_path, tiny) -> None:
    seen: list[bool] = []
    handle = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda mod, inp: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)
                                     and not inp[0].is_contiguous()) if isinstance(mod, torch.nn.Conv2d) else None)
    try:
        nhwc = train("srresnet", {**tiny, "channels_last": True}, steps=3, out_dir=tmp_path / "nhwc", progress=False)
        nhwc_seen = list(seen)
        seen.clear()
        nchw = train("srresnet", tiny, steps=3, out_dir=tmp_path / "nchw", progress=False)
    finally:
        handle.remove()
    assert nhwc_seen and all(nhwc_seen[:4]) and not any(seen[:4])  # the training steps' convolutions
    a, b = load_checkpoint(nhwc)["state"], load_checkpoint(nchw)["state"]
    assert a.keys() == b.keys()
    for key in a:  # same data and seed: the same weights up to the convolutions' summation order
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    start = load_checkpoint(train("srresnet", tiny, steps=0, out_dir=tmp_path / "init", progress=False))["state"]
    assert any(not torch.equal(a[k], start[k]) for k in a)  # the three steps did move the weights
    # the stored weights load into a plain (contiguous) model, as export builds it
    assert build_from_checkpoint(nhwc).generator.head[0].weight.is_contiguous()
