"""Tiled inference: cut a large image into overlapping tiles, run them, and blend the outputs back seamlessly.

Why: a fully convolutional model's memory grows with the image (a x4 model on 1024x1024 input holds activations at
4096x4096), so large images run tile by tile within a bounded budget. Tiles all have one size so they batch
together, and they go through the model's batcher like any request.

Blending: along each axis a tile's weight rises from 0 to 1 across the overlap with its neighbour. The outer quarter
of the overlap (the pixels nearest the tile's cut edge, which see zero padding instead of the real neighbourhood)
gets weight 0, the middle half ramps linearly, so neighbouring weights sum to 1 and, when a quarter of the overlap
covers the network's receptive radius, the result equals the untiled run. Image borders get no ramp. Weights are
separable (row weight x column weight), so normalising needs only two 1-D sums, not a full-size weight image.

`run_tiled` blends into one float image of the whole output; `run_tiled_rows` blends the same tiles in plan order
into one band (a row of tiles) at a time and hands back 8-bit rows, so the float working set is a band, not the
output (a 4096x4096 x4 request: about 160 MB instead of 3.2 GB).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

Infer = Callable[[np.ndarray], Awaitable[np.ndarray]]
# A float (1, C, h, w) block in the model's output range -> its 8-bit pixels, rows first (e.g. imaging.to_pixels).
ToUint8 = Callable[[np.ndarray], np.ndarray]

# Rows are converted to 8 bits in blocks of at most this many float elements (4 MB), so the converter's own float
# copy stays small however wide the output is.
CONVERT_ELEMENTS = 1 << 20


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


def fits_one_tile(height: int, width: int, tile: int) -> bool:
    """Whether an image goes to the model whole (no tiling, or no larger than one tile)."""
    return tile <= 0 or (height <= tile and width <= tile)


def _check_image(image: np.ndarray, scale: int) -> None:
    """Refuse what tiling cannot take: not one float32 (1, C, H, W) image, or a scale below 1."""
    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"tiling needs one image shaped (1, C, H, W), got {image.shape}")
    if image.dtype != np.float32:
        raise ValueError(f"tiling needs float32 input, got {image.dtype}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")


@dataclass(frozen=True)
class _Grid:
    """A tile plan with its blending weights in output pixels (shared by the whole-image and banded blends)."""

    tiles: list[tuple[int, int, int, int]]
    ys: list[int]  # distinct tile starts (input pixels), one per row of tiles
    xs: list[int]  # distinct tile starts (input pixels), one per column of tiles
    out_th: int  # tile height in output pixels
    out_tw: int  # tile width in output pixels
    y_ramps: list[np.ndarray]
    x_ramps: list[np.ndarray]
    row_sum: np.ndarray  # total weight per output row
    col_sum: np.ndarray  # total weight per output column

    def weight(self, index: int) -> np.ndarray:
        """Tile ``index``'s 2-D blending weight (row ramp x column ramp)."""
        row, col = divmod(index, len(self.xs))
        return self.y_ramps[row][:, None] * self.x_ramps[col][None, :]


def _grid(height: int, width: int, scale: int, tile: int, overlap: int, multiple: int) -> _Grid:
    """The tile plan and blending weights of an image larger than one tile."""
    tiles = plan_tiles(height, width, tile, overlap, multiple)
    _, overlap_m = _aligned(tile, overlap, multiple)
    th, tw = tiles[0][2] - tiles[0][0], tiles[0][3] - tiles[0][1]
    ys = sorted({t[0] for t in tiles})
    xs = sorted({t[1] for t in tiles})
    out_h, out_w = height * scale, width * scale
    y_ramps = _ramps([y * scale for y in ys], th * scale, out_h, overlap_m * scale)
    x_ramps = _ramps([x * scale for x in xs], tw * scale, out_w, overlap_m * scale)
    row_sum = _axis_sum([y * scale for y in ys], y_ramps, out_h)
    col_sum = _axis_sum([x * scale for x in xs], x_ramps, out_w)
    return _Grid(tiles, ys, xs, th * scale, tw * scale, y_ramps, x_ramps, row_sum, col_sum)


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
    _check_image(image, scale)
    height, width = image.shape[2], image.shape[3]
    if fits_one_tile(height, width, tile):
        return _checked(await infer(image), height * scale, width * scale)

    grid = _grid(height, width, scale, tile, overlap, multiple)
    tiles, th, tw = grid.tiles, grid.out_th, grid.out_tw
    out_h, out_w = height * scale, width * scale
    gate = asyncio.Semaphore(max_in_flight if max_in_flight > 0 else len(tiles))

    async def run_one(index: int) -> tuple[int, np.ndarray]:
        y0, x0, y1, x1 = tiles[index]
        async with gate:
            result = await infer(np.ascontiguousarray(image[:, :, y0:y1, x0:x1]))
        return index, _checked(result, th, tw)

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
            accumulator[:, y0 : y0 + th, x0 : x0 + tw] += result[0] * grid.weight(index)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert accumulator is not None  # tiles is never empty
    accumulator /= grid.row_sum[None, :, None]
    accumulator /= grid.col_sum[None, None, :]
    return accumulator[None]


async def run_tiled_rows(
    image: np.ndarray,
    infer: Infer,
    scale: int,
    tile: int,
    overlap: int,
    multiple: int,
    to_uint8: ToUint8,
    max_in_flight: int = 16,
) -> np.ndarray:
    """`run_tiled` straight to 8-bit rows: the same blend, but only one band (row of tiles) is ever held in float.

    Why: the float output of a 4096x4096 x4 request is 3.2 GB; here the float working set is one band of the
    output (tile height x output width, the overlap rows it shares with the next band included), the tile
    outputs waiting to be blended and one conversion block (`banded_window_bytes`). Tiles are blended in plan order
    whatever order they finish in, so every output pixel sums the same tiles in the same order as `run_tiled`
    (which sees them in plan order when they finish in it) and the bytes equal ``to_uint8(run_tiled(...))``. Once a
    band is blended, the rows no later tile touches are normalised, converted by ``to_uint8`` (in a worker thread,
    in blocks of at most `CONVERT_ELEMENTS`) and dropped. At most ``max_in_flight`` tiles (0 = one band's worth)
    are submitted and not yet blended, reaching into the next band while this one finishes. Returns the rows of
    ``to_uint8``'s blocks stacked along their first axis (H*scale rows). Images no larger than one tile go straight
    to ``infer`` and are converted whole; a failing tile cancels the others and its error propagates.
    """
    _check_image(image, scale)
    height, width = image.shape[2], image.shape[3]
    out_h = height * scale
    if fits_one_tile(height, width, tile):
        whole = _checked(await infer(image), out_h, width * scale)
        return await asyncio.to_thread(_convert_rows, whole[0], to_uint8, None, 0, out_h)

    grid = _grid(height, width, scale, tile, overlap, multiple)
    tiles, th, tw, per_band = grid.tiles, grid.out_th, grid.out_tw, len(grid.xs)
    window = max_in_flight if max_in_flight > 0 else per_band

    async def run_one(index: int) -> np.ndarray:
        y0, x0, y1, x1 = tiles[index]
        return _checked(await infer(np.ascontiguousarray(image[:, :, y0:y1, x0:x1])), th, tw)

    pending: deque[asyncio.Task[np.ndarray]] = deque()
    submitted = 0
    band: np.ndarray | None = None  # output rows [ys[row] * scale, ys[row] * scale + th) of the current band
    rows: np.ndarray | None = None
    try:
        for index in range(len(tiles)):
            while submitted < min(len(tiles), index + window):
                pending.append(asyncio.create_task(run_one(submitted)))
                submitted += 1
            result = await _head_result(pending)
            pending.popleft()
            if band is None:
                band = np.zeros((result.shape[1], th, width * scale), np.float32)
            elif result.shape[1] != band.shape[0]:
                raise ValueError(f"tile outputs disagree on channels: {result.shape[1]} vs {band.shape[0]}")
            row, col = divmod(index, per_band)
            x0 = grid.xs[col] * scale
            band[:, :, x0 : x0 + tw] += result[0] * grid.weight(index)
            del result
            if col == per_band - 1:
                top = grid.ys[row] * scale
                done = (grid.ys[row + 1] - grid.ys[row]) * scale if row + 1 < len(grid.ys) else th
                rows = await asyncio.to_thread(_finish_rows, band, done, grid, top, to_uint8, rows, out_h)
                if row + 1 < len(grid.ys):
                    _drop_rows(band, done)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    assert rows is not None  # the last band converts its rows
    return rows


async def _head_result(pending: deque[asyncio.Task[np.ndarray]]) -> np.ndarray:
    """The first pending tile's result; a later tile that fails first raises at once (cancelling the rest sooner)."""
    head = pending[0]
    while not head.done():
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                task.result()  # raises the tile's error
    return head.result()


def _finish_rows(band: np.ndarray, done: int, grid: _Grid, top: int, to_uint8: ToUint8, rows: np.ndarray | None,
                 out_h: int) -> np.ndarray:
    """Normalise the band's first ``done`` rows (output rows from ``top``) as `run_tiled` does, and convert them."""
    block = band[:, :done]
    block /= grid.row_sum[top : top + done][None, :, None]
    block /= grid.col_sum[None, None, :]
    return _convert_rows(block, to_uint8, rows, top, out_h)


def _convert_rows(block: np.ndarray, to_uint8: ToUint8, rows: np.ndarray | None, top: int, out_h: int) -> np.ndarray:
    """Convert float (C, h, w) rows to 8 bits block by block into ``rows`` (made on first use, ``out_h`` rows)."""
    step = max(1, CONVERT_ELEMENTS // (block.shape[0] * block.shape[2]))
    for start in range(0, block.shape[1], step):
        count = min(step, block.shape[1] - start)
        pixels = to_uint8(block[None, :, start : start + count])
        if pixels.shape[0] != count:
            raise ValueError(f"to_uint8 returned {pixels.shape[0]} rows for a block of {count}")
        if rows is None:
            rows = np.empty((out_h, *pixels.shape[1:]), pixels.dtype)
        rows[top + start : top + start + count] = pixels
        del pixels  # not held while the next block converts
    assert rows is not None  # a block has at least one row
    return rows


def _drop_rows(band: np.ndarray, done: int) -> None:
    """Move the band's rows after the first ``done`` (the overlap the next band shares) to its top and zero the rest.

    Copied per channel in runs of at most ``done`` rows, so source and target never overlap and numpy needs no
    temporary copy.
    """
    keep = band.shape[1] - done
    for channel in band:
        for start in range(0, keep, done):
            n = min(done, keep - start)
            channel[start : start + n] = channel[start + done : start + done + n]
    band[:, keep:] = 0.0


def banded_window_bytes(height: int, width: int, channels: int, scale: int, tile: int, overlap: int,
                        multiple: int = 1, max_in_flight: int = 16) -> int:
    """Peak working bytes of `run_tiled_rows` on an (H, W) input with ``channels`` output channels, for a memory
    cost estimate: one float band, the tile outputs submitted and not yet blended, and the larger of one tile's
    weighted product (with its weight) and one conversion block (a float copy and its 8-bit pixels, as
    imaging.to_pixels makes). Not counted: the 8-bit result, the input image and tile inputs, the model's own memory.
    """
    out_h, out_w = height * scale, width * scale
    if fits_one_tile(height, width, tile):
        block = min(out_h, max(1, CONVERT_ELEMENTS // (channels * out_w))) * channels * out_w
        return 4 * channels * out_h * out_w + 5 * block
    grid = _grid(height, width, scale, tile, overlap, multiple)
    window = max_in_flight if max_in_flight > 0 else len(grid.xs)
    tile_out = channels * grid.out_th * grid.out_tw
    band = channels * grid.out_th * out_w
    block = min(grid.out_th, max(1, CONVERT_ELEMENTS // (channels * out_w))) * channels * out_w
    product = tile_out + grid.out_th * grid.out_tw
    return 4 * (band + min(window, len(grid.tiles)) * tile_out) + max(4 * product, 5 * block)


def _checked(result: np.ndarray, height: int, width: int) -> np.ndarray:
    """Make sure the model returned one image of the expected output size."""
    if result.ndim != 4 or result.shape[0] != 1 or result.shape[2:] != (height, width):
        raise ValueError(f"model output shape {result.shape} is not (1, C, {height}, {width})")
    return result
