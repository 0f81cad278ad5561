"""Translation networks: generator/discriminator shapes at two sizes, dropout, receptive field, the image pool."""

from __future__ import annotations

import pytest
import torch

from ganserve.core.errors import GanserveError
from ganserve.training.data.image_pool import ImagePool
from ganserve.training.networks.translation import PatchDiscriminator, ResnetGenerator, UNetGenerator, norm_layer


@pytest.mark.parametrize("depth,size", [(5, 32), (5, 64), (6, 64), (6, 128)])
def test_unet_keeps_shape_and_range(depth: int, size: int) -> None:
    torch.manual_seed(0)
    g = UNetGenerator(depth=depth, ngf=4, max_mult=4, norm="batch").eval()
    y = g(torch.rand(2, 3, size, size + 2**depth) * 2 - 1)
    assert y.shape == (2, 3, size, size + 2**depth)
    assert g.spatial_multiple == 2**depth and y.abs().max() <= 1.0


def test_unet_dropout_is_noise_in_training_and_off_in_eval() -> None:
    torch.manual_seed(0)
    g = UNetGenerator(depth=5, ngf=4, norm="instance", dropout=0.5)
    drops = [m for m in g.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 3  # the three innermost decoder levels after the bottleneck, as in the paper
    x = torch.rand(1, 3, 32, 32)
    g.train()
    assert not torch.equal(g(x), g(x))
    g.eval()
    assert torch.equal(g(x), g(x))


def test_unet_channel_cap_bounds_width() -> None:
    g = UNetGenerator(depth=6, ngf=8, max_mult=2)
    widths = {m.out_channels for m in g.modules() if isinstance(m, torch.nn.Conv2d)}
    assert max(widths) == 16


@pytest.mark.parametrize("size", [(64, 64), (36, 52)])
def test_resnet_generator_shapes(size: tuple[int, int]) -> None:
    g = ResnetGenerator(ngf=4, blocks=2, norm="instance").eval()
    y = g(torch.rand(1, 3, *size))
    assert y.shape == (1, 3, *size) and ResnetGenerator.spatial_multiple == 4
    assert sum(isinstance(m, torch.nn.ReflectionPad2d) for m in g.modules()) == 2 + 2 * 2


def test_patchgan_70x70_receptive_field_and_map_sizes() -> None:
    d = PatchDiscriminator(6, ndf=4, layers=3)
    assert d.receptive_field == 70
    assert PatchDiscriminator(3, ndf=4, layers=1).receptive_field == 16
    # 4x4 convs, strides 2, 2, 2, 1, 1 with padding 1: 64 -> 32 -> 16 -> 8 -> 7 -> 6; 128 -> ... -> 14
    assert d(torch.rand(2, 6, 64, 64)).shape == (2, 1, 6, 6)
    assert d(torch.rand(1, 6, 128, 128)).shape == (1, 1, 14, 14)


def test_norm_layer_kinds() -> None:
    assert isinstance(norm_layer("instance", 4), torch.nn.InstanceNorm2d)
    assert isinstance(norm_layer("batch", 4), torch.nn.BatchNorm2d)
    with pytest.raises(GanserveError, match="norm must be one of"):
        norm_layer("group", 4)


def test_image_pool_fills_then_swaps_half() -> None:
    pool = ImagePool(4)
    gen = torch.Generator().manual_seed(0)
    first = torch.arange(4.0).view(4, 1, 1, 1)
    assert torch.equal(pool.query(first, gen), first)  # filling: the new images come back unchanged
    assert len(pool.images) == 4
    returned, swapped = [], 0
    for k in range(200):
        batch = torch.full((1, 1, 1, 1), 100.0 + k)
        out = pool.query(batch, gen)
        returned.append(float(out))
        swapped += float(out) != 100.0 + k
    assert 70 < swapped < 130  # about half the queries return an older image
    stored = {float(t) for t in pool.images}
    assert len(pool.images) == 4 and all(v >= 100.0 or v in (0.0, 1.0, 2.0, 3.0) for v in stored)
    # every older image handed out was in the pool before: never an image from the future
    seen: set[float] = {0.0, 1.0, 2.0, 3.0}
    for k, v in enumerate(returned):
        seen.add(100.0 + k)
        assert v in seen


def test_image_pool_zero_size_and_determinism() -> None:
    x = torch.rand(3, 3, 2, 2)
    assert torch.equal(ImagePool(0).query(x, torch.Generator()), x)
    runs = []
    for _ in range(2):
        pool, gen = ImagePool(2), torch.Generator().manual_seed(5)
        runs.append(torch.cat([pool.query(torch.full((2, 1, 1, 1), float(i)), gen) for i in range(10)]))
    assert torch.equal(runs[0], runs[1])


def test_residual_resnet_generator_starts_near_the_identity_and_stays_in_range() -> None:
    torch.manual_seed(0)
    g = ResnetGenerator(3, 3, ngf=4, blocks=2, norm="none", residual=True)
    x = torch.rand(2, 3, 16, 20) * 2 - 1
    y = g(x)
    assert y.shape == x.shape and float(y.abs().max()) <= 1.0
    assert float((y - x).abs().max()) < 0.05  # the correction head starts at a tenth of its usual scale
    with torch.no_grad():
        g.model[-1].bias.fill_(5.0)  # a large correction is clipped to the image range
    assert torch.equal(g(x), torch.ones_like(x))
    with pytest.raises(GanserveError, match="as many output as input channels"):
        ResnetGenerator(3, 1, ngf=4, blocks=1, residual=True)
