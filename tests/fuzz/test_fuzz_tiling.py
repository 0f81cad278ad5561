"""Fuzz the tiling planner and tiled inference (serving/tiling.py plan_tiles / run_tiled).

plan_tiles, for any height, width, tile, overlap and multiple: a ValueError with a message, or tiles that cover
every pixel, lie within the image, all have one size, start on the multiple's grid, come row-major and overlap by
at least the (rounded-up) overlap wherever two neighbours meet. run_tiled with a pointwise, nearest-neighbour
scaling "model" gives the untiled result: exactly when no blending ramp is involved, within float tolerance else.
"""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ganserve.serving.tiling import plan_tiles, run_tiled

FUZZ = settings.get_profile("fuzz")


def _rounded(tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    return tile // multiple * multiple, -(-overlap // multiple) * multiple


def rarely(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws (hypothesis favours small integers, so test the top value, not 0)."""
    return draw(st.integers(1, one_in)) == one_in


@st.composite
def plans(draw) -> tuple[int, int, int, int, int]:
    """Mostly what the server asks for (H and W multiples of the multiple), now and then anything at all."""
    multiple = draw(st.sampled_from([1, 1, 2, 3, 4, 8, 16]))
    height, width = (multiple * draw(st.integers(1, 40)) for _ in range(2))
    tile, overlap = draw(st.integers(1, 160)), draw(st.integers(0, 40))
    if rarely(draw, 4):
        multiple = draw(st.integers(-1, 16))
    if rarely(draw, 4):
        height, width = draw(st.integers(-2, 300)), draw(st.integers(-2, 300))
    if rarely(draw, 4):
        tile, overlap = draw(st.integers(-4, 160)), draw(st.integers(-3, 160))
    return height, width, tile, overlap, multiple


@settings(FUZZ, max_examples=400, deadline=None, derandomize=True)
@given(plan=plans())
@example(plan=(1, 1, 1, 0, 1))
@example(plan=(256, 256, 64, 63, 1))
@example(plan=(256, 8, 64, 64, 8))  # overlap = tile, but W fits in one tile
def test_plan_tiles_cover_the_image_on_the_grid(plan: tuple[int, int, int, int, int]) -> None:
    height, width, tile, overlap, multiple = plan
    try:
        tiles = plan_tiles(height, width, tile, overlap, multiple)
    except ValueError as exc:
        assert str(exc).strip()
        # the refusals are exactly these (an error is never a planner giving up on a valid request)
        bad = (height < 1 or width < 1 or multiple < 1 or overlap < 0 or tile // multiple * multiple < 1
               or height % multiple or width % multiple)
        if not bad:
            tile_m, overlap_m = _rounded(tile, overlap, multiple)
            assert overlap_m >= min(tile_m, height) < height or overlap_m >= min(tile_m, width) < width, exc
        return
    assert height >= 1 and width >= 1 and multiple >= 1 and overlap >= 0
    assert height % multiple == 0 and width % multiple == 0
    tile_m, overlap_m = _rounded(tile, overlap, multiple)
    th, tw = min(tile_m, height), min(tile_m, width)
    assert tiles and tiles == sorted(tiles)  # row-major
    assert len(set(tiles)) == len(tiles)
    covered = np.zeros((height, width), np.int32)
    for y0, x0, y1, x1 in tiles:
        assert (y1 - y0, x1 - x0) == (th, tw)
        assert 0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width
        assert y0 % multiple == 0 and x0 % multiple == 0
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1
    for starts, size in ((sorted({t[0] for t in tiles}), th), (sorted({t[1] for t in tiles}), tw)):
        for a, b in zip(starts, starts[1:]):
            assert a + size - b >= overlap_m  # neighbours overlap by at least the overlap


def _scaled(scale: int, gain: float, bias: float, channels_out: int | None):
    """A pointwise 'model': gain * x + bias (or the channel mean), upscaled by nearest neighbour."""
    calls = []

    async def infer(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape)
        await asyncio.sleep(0)  # let tiles finish out of order
        y = gain * x + bias if channels_out is None else x.mean(axis=1, keepdims=True).repeat(channels_out, 1)
        return y.repeat(scale, axis=2).repeat(scale, axis=3).astype(np.float32)
    return infer, calls


@settings(FUZZ, max_examples=150, deadline=None, derandomize=True)
@given(multiple=st.sampled_from([1, 1, 2, 4, 8]), h_units=st.integers(1, 24), w_units=st.integers(1, 24),
       channels=st.sampled_from([1, 3]), channels_out=st.sampled_from([None, None, 1, 3]),
       scale=st.integers(1, 3), tile=st.one_of(st.integers(4, 32), st.integers(-1, 48)), overlap=st.integers(0, 12),
       max_in_flight=st.integers(0, 4), seed=st.integers(0, 2**16))
@example(multiple=4, h_units=12, w_units=5, channels=3, channels_out=None, scale=2, tile=16, overlap=0,
         max_in_flight=0, seed=1)
@example(multiple=1, h_units=40, w_units=33, channels=3, channels_out=None, scale=2, tile=16, overlap=8,
         max_in_flight=2, seed=2)
def test_run_tiled_equals_the_untiled_run(multiple: int, h_units: int, w_units: int, channels: int,
                                          channels_out: int | None, scale: int, tile: int, overlap: int,
                                          max_in_flight: int, seed: int) -> None:
    height, width = h_units * multiple, w_units * multiple
    if tile >= 4 and overlap * 2 >= tile:  # mostly what the servicer lets through (overlap under half the tile)
        overlap = overlap % (tile // 2)
    tile = tile * multiple if tile >= 4 and multiple > 1 and tile % 3 else tile  # now and then not on the grid
    rng = np.random.default_rng(seed)
    image = rng.uniform(-1, 1, (1, channels, height, width)).astype(np.float32)
    infer, calls = _scaled(scale, float(rng.uniform(-2, 2)), float(rng.uniform(-1, 1)), channels_out)
    whole = asyncio.run(infer(image))
    calls.clear()
    try:
        tiled = asyncio.run(run_tiled(image, infer, scale, tile, overlap, multiple, max_in_flight))
    except ValueError as exc:
        assert str(exc).strip()
        assert tile > 0 and (height > tile or width > tile)  # only a real tiling can be refused
        return
    assert tiled.shape == whole.shape and tiled.dtype == np.float32
    if tile <= 0 or (height <= tile and width <= tile):
        assert calls == [image.shape]
        assert np.array_equal(tiled, whole)
        return
    tiles = plan_tiles(height, width, tile, overlap, multiple)
    assert sorted(calls) == sorted((1, channels, y1 - y0, x1 - x0) for y0, x0, y1, x1 in tiles)
    _, overlap_m = _rounded(tile, overlap, multiple)
    if overlap_m == 0:  # no ramp: every weight is 1 and at most 2 tiles meet per axis
        assert np.array_equal(tiled, whole)
    else:
        np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
