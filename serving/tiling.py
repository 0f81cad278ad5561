"""Tiled inference: cut a large image into overlapping tiles, run them, and blend the outputs back seamlessly.

Why: a fully convolutional model's memory grows with the image (a x4 model on 1024x1024 input holds activations at
4096x4096), so large images run tile by tile within a bounded budget. Tiles all have one size so they batch
together, and they go through the model's batcher like any request.

Blending: along each axis a tile's weight rises from 0 to 1 across the overlap with its neighbour. The outer quarter
of the overlap (the pixels nearest the tile's cut edge, which see zero padding instead of the real neighbourhood)
gets weight 0, the middle half ramps linearly, so neighbouring weights sum to 1 and, when a quarter of the overlap
covers the network's receptive radius, the result equals the untiled run. Image borders get no ramp. Weights are
separable (row weight x column weight), so normalising needs only two 1-D sums, not a full-size weight image.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np

Infer = Callable[[np.ndarray], Awaitable[np.ndarray]]


def _axis_positions(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Tile starts along one axis and the tile length; the last tile is shifted inward to end at the border."""
    size = min(tile, length)
    if size == length:
        return [0], size
    if overlap >= size:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile size {size}")
    stride = size - overlap
    return list(range(0, length - size, stride)) + [length - size], size


def on_grid(tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    """The tile size rounded down and the overlap up to the model's spatial multiple (tiles start on its grid)."""
    return tile // multiple * multiple, -(-overlap // multiple) * multiple


def _aligned(tile: int, overlap: int, multiple: int) -> tuple[int, int]:
    """`on_grid`, refusing a multiple, overlap or tile size that leaves no tile."""
    if multiple < 1:
        raise ValueError(f"spatial multiple must be >= 1, got {multiple}")
    if overlap < 0:
        raise ValueError(f"tile overlap must be >= 0, got {overlap}")
    tile_m, overlap_m = on_grid(tile, overlap, multiple)
    if tile_m < 1:
        raise ValueError(f"tile size {tile} is smaller than the model's spatial multiple {multiple}")
    return tile_m, overlap_m


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """Tiles (y0, x0, y1, x1) in input pixels covering the image, row-major, all of one size so they batch together.

    The tile size is rounded down and the overlap up to ``multiple``; H and W must be multiples of it (the server
    pads to the model's spatial multiple first), so every tile starts on the model's grid.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size {height}x{width} is empty")
    tile_m, overlap_m = _aligned(tile, overlap, multiple)
    if height % multiple or width % multiple:
        raise ValueError(f"image size {height}x{width} is not a multiple of the model's spatial multiple {multiple}")
    ys, th = _axis_positions(height, tile_m, overlap_m)
    xs, tw = _axis_positions(width, tile_m, overlap_m)
    return [(y, x, y + th, x + tw) for y in ys for x in xs]


def _ramps(starts: list[int], size: int, length: int, overlap: int) -> list[np.ndarray]:
    """Each tile's 1-D blending weight along one axis (all in output pixels)."""
    margin = overlap // 4
    width = overlap - 2 * margin
    distance = np.arange(size, dtype=np.float32) + 0.5
    rise = np.ones(size, np.float32) if width <= 0 else np.clip((distance - margin) / width, 0.0, 1.0)
    ramps = []
    for start in starts:
        weight = np.ones(size, np.float32)
        if start > 0:
            weight = np.minimum(weight, rise)
        if start + size < length:
            weight = np.minimum(weight, rise[::-1])
        ramps.append(weight)
    return ramps


def _axis_sum(starts: list[int], ramps: list[np.ndarray], length: int) -> np.ndarray:
    """Total weight per output pixel along one axis (never zero: every pixel lies in some tile's flat part)."""
    total = np.zeros(length, np.float32)
    for start, ramp in zip(starts, ramps, strict=True):
        total[start : start + ramp.size] += ramp
    return total


async def run_tiled(
    image: np.ndarray,
    infer: Infer,
    scale: int,
    tile: int,
    overlap: int,
    multiple: int = 1,
    max_in_flight: int = 16,
) -> np.ndarray:
    """Run ``infer`` on overlapping tiles of ``image`` (1, C, H, W) float32 and blend to (1, C', H*scale, W*scale).

    Tiles are submitted concurrently, at most ``max_in_flight`` at a time (0 = all at once), so they share batches
    with each other and with other requests while a huge image cannot fill the model's bounded queue alone; each
    result is blended as it arrives, so memory stays at one output image plus the tiles in flight. Images no
    larger than one tile (or ``tile`` <= 0) go straight to ``infer``. If any tile fails, the others are cancelled
    and the error propagates.
    """
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"tiling needs one image shaped (1, C, H, W), got {image.shape}")
    if image.dtype != np.float32:
        raise ValueError(f"tiling needs float32 input, got {image.dtype}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    height, width = image.shape[2], image.shape[3]
    if tile <= 0 or (height <= tile and width <= tile):
        return _checked(await infer(image), height * scale, width * scale)

    tiles = plan_tiles(height, width, tile, overlap, multiple)
    _, overlap_m = _aligned(tile, overlap, multiple)
    th, tw = tiles[0][2] - tiles[0][0], tiles[0][3] - tiles[0][1]
    ys = sorted({t[0] for t in tiles})
    xs = sorted({t[1] for t in tiles})
    out_h, out_w = height * scale, width * scale
    y_ramps = _ramps([y * scale for y in ys], th * scale, out_h, overlap_m * scale)
    x_ramps = _ramps([x * scale for x in xs], tw * scale, out_w, overlap_m * scale)
    gate = asyncio.Semaphore(max_in_flight if max_in_flight > 0 else len(tiles))

    async def run_one(index: int) -> tuple[int, np.ndarray]:
        y0, x0, y1, x1 = tiles[index]
        async with gate:
            result = await infer(np.ascontiguousarray(image[:, :, y0:y1, x0:x1]))
        return index, _checked(result, th * scale, tw * scale)

    tasks = [asyncio.create_task(run_one(i)) for i in range(len(tiles))]
    accumulator: np.ndarray | None = None
    try:
        for next_done in asyncio.as_completed(tasks):
            index, result = await next_done
            if accumulator is None:
                accumulator = np.zeros((result.shape[1], out_h, out_w), np.float32)
            elif result.shape[1] != accumulator.shape[0]:
                raise ValueError(f"tile outputs disagree on channels: {result.shape[1]} vs {accumulator.shape[0]}")
            y0, x0 = tiles[index][0] * scale, tiles[index][1] * scale
            weight = y_ramps[ys.index(tiles[index][0])][:, None] * x_ramps[xs.index(tiles[index][1])][None, :]
            accumulator[:, y0 : y0 + th * scale, x0 : x0 + tw * scale] += result[0] * weight
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert accumulator is not None  # tiles is never empty
    accumulator /= _axis_sum([y * scale for y in ys], y_ramps, out_h)[None, :, None]
    accumulator /= _axis_sum([x * scale for x in xs], x_ramps, out_w)[None, None, :]
    return accumulator[None]


def _checked(result: np.ndarray, height: int, width: int) -> np.ndarray:
    """Make sure the model returned one image of the expected output size."""
    if result.ndim != 4 or result.shape[0] != 1 or result.shape[2:] != (height, width):
        raise ValueError(f"model output shape {result.shape} is not (1, C, {height}, {width})")
    return result
