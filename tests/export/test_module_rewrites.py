"""export/module_rewrites.py: transposed convolutions become convolution + pixel shuffle, computing the same."""

from __future__ import annotations

import io

import onnx
import pytest
import torch
from torch import nn

from ganserve.export.module_rewrites import ShuffledTransposedConv, eligible, transposed_as_shuffle


@pytest.mark.parametrize("k,s,p", [(4, 2, 1), (2, 2, 0), (6, 2, 2), (8, 4, 2), (3, 3, 0)])
def test_rewritten_transposed_convolution_is_the_same_function(k: int, s: int, p: int) -> None:
    torch.manual_seed(k * 10 + s)
    convt = nn.ConvTranspose2d(5, 3, k, stride=s, padding=p)
    assert eligible(convt)
    for shape in [(1, 5, 1, 1), (2, 5, 7, 9)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            want, got = convt(x), ShuffledTransposedConv(convt)(x)
        assert got.shape == want.shape and float((got - want).abs().max()) < 1e-5, shape


def test_only_size_exact_plain_transposed_convolutions_are_rewritten_and_the_original_is_untouched() -> None:
    left = [nn.ConvTranspose2d(4, 4, 3, stride=1, padding=1), nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, groups=2),
            nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1), nn.ConvTranspose2d(4, 4, 5, stride=2)]
    assert not any(eligible(m) for m in left)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1), nn.ReLU(),
                        nn.Sequential(nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1, bias=False)), *left[:1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast, count = transposed_as_shuffle(net)
    assert count == 2 and isinstance(fast[1], ShuffledTransposedConv) and isinstance(fast[3][0], ShuffledTransposedConv)
    assert isinstance(fast[4], nn.ConvTranspose2d)  # stride 1: left alone
    x = torch.randn(2, 3, 5, 6)
    with torch.no_grad():
        assert float((fast(x) - net(x)).abs().max()) < 1e-5
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    plain = nn.Sequential(nn.Conv2d(3, 3, 1))
    assert transposed_as_shuffle(plain) == (plain, 0)


def test_the_traced_graph_has_no_transposed_convolution() -> None:
    fast, _ = transposed_as_shuffle(nn.Sequential(nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1)).eval())
    buf = io.BytesIO()
    torch.onnx.export(fast, (torch.randn(1, 3, 8, 8),), buf, dynamo=False, opset_version=17)
    ops = {n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node}
    assert "ConvTranspose" not in ops and {"Conv", "DepthToSpace"} <= ops
