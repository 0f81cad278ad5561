"""Banded tiling straight to 8-bit rows (serving/tiling.py run_tiled_rows): the same bytes as converting run_tiled's
float output, a float working set of one band, run_tiled's errors, and unchanged image API replies."""

from __future__ import annotations

import asyncio
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, MODEL_FILE, ModelCard, TensorSpec, triton_config
from ganserve.serving import image_api, tiling
from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.image_api import _to_encoded
from ganserve.serving.imaging import decode_image, from_layout, pad_to_multiple, to_layout, to_pixels, to_tensor
from ganserve.serving.server import ServerThread
from ganserve.serving.tiling import Infer, banded_window_bytes, plan_tiles, run_tiled, run_tiled_rows
from local_server import chosen_runner, server_config
from test_imaging import png_bytes
from test_tiling import failing_tile_started, sr_model


def blurred_upscale(scale: int, delay: bool = False) -> Infer:
    """Nearest x``scale`` then a 3x3 box blur with zero padding, x1.2: tile edges darken (overlap-sensitive) and
    values overshoot the range (clipping); with ``delay``, tiles finish in a random order."""
    jitter = random.Random(0)

    async def infer(tile: np.ndarray) -> np.ndarray:
        if delay:
            await asyncio.sleep(jitter.random() * 0.003)
        up = tile.repeat(scale, 2).repeat(scale, 3)
        h, w = up.shape[2], up.shape[3]
        padded = np.pad(up, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = padded[:, :, 0:h, 0:w].copy()
        for dy, dx in [(dy, dx) for dy in range(3) for dx in range(3)][1:]:
            out += padded[:, :, dy : dy + h, dx : dx + w]
        out *= np.float32(1.2 / 9)
        return out

    return infer


def image_of(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """Noise on a diagonal ramp from -1.6 to 1.6, so the output spans and overshoots either value range."""
    ramp = np.linspace(-0.8, 0.8, height)[:, None] + np.linspace(-0.8, 0.8, width)[None, :]
    noise = np.random.default_rng(seed).uniform(-0.4, 0.4, (1, channels, height, width))
    return (ramp + noise).astype(np.float32)


def converter(channels: int, value_range: tuple[float, float]):
    spec = TensorSpec("y", [channels, -1, -1], value_range=list(value_range))
    return lambda block: to_pixels(block, spec)


# (height, width, channels, scale, tile, overlap, multiple, max_in_flight, value range)
CASES = [
    (37, 53, 3, 1, 16, 4, 1, 16, (-1, 1)),  # odd sizes, x1
    (64, 40, 1, 2, 16, 6, 1, 3, (0, 1)),  # grey, [0, 1], few in flight
    (72, 96, 3, 4, 32, 8, 4, 16, (-1, 1)),  # x4 on a spatial multiple
    (48, 56, 3, 2, 24, 5, 8, 2, (0, 1)),  # overlap rounds up to the multiple 8
    (130, 33, 3, 2, 128, 16, 1, 16, (-1, 1)),  # one column of tiles; the last band overlaps the first by 126 rows
    (20, 100, 1, 4, 32, 8, 1, 0, (-1, 1)),  # one band; 0 in flight = a band's worth
    (45, 45, 3, 2, 16, 0, 1, 4, (-1, 1)),  # no overlap (seams kept, bytes still equal)
    (61, 47, 3, 3, 20, 7, 1, 1, (0, 1)),  # x3, one tile at a time
    (10, 12, 3, 2, 16, 4, 1, 16, (-1, 1)),  # no larger than one tile: straight to infer
]


@pytest.mark.parametrize("convert_elements", [tiling.CONVERT_ELEMENTS, 500])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}x{c[1]}c{c[2]}s{c[3]}t{c[4]}o{c[5]}m{c[6]}" for c in CASES])
def test_rows_are_bit_identical_to_converting_run_tiled(case: tuple, convert_elements: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    height, width, channels, scale, tile, overlap, multiple, in_flight, value_range = case
    monkeypatch.setattr(tiling, "CONVERT_ELEMENTS", convert_elements)  # 500: many small conversion blocks
    image = image_of(height, width, channels)
    infer, to_uint8 = blurred_upscale(scale), converter(channels, value_range)
    floats = asyncio.run(run_tiled(image, infer, scale, tile, overlap, multiple, in_flight))
    rows = asyncio.run(run_tiled_rows(image, infer, scale, tile, overlap, multiple, to_uint8, in_flight))
    expected = to_uint8(floats)
    assert rows.dtype == np.uint8 and rows.shape == expected.shape
    assert rows.shape[:2] == (height * scale, width * scale)
    assert np.array_equal(rows, expected)
    assert 0 < np.count_nonzero(rows == 255) and 0 < np.count_nonzero(rows == 0)  # clipping exercised


def test_tile_finishing_order_does_not_change_a_byte() -> None:
    """Tiles are blended in plan order whatever order they finish in, so the bytes stay the same."""
    image = image_of(90, 70, 3, seed=1)
    to_uint8 = converter(3, (-1, 1))
    in_order = asyncio.run(run_tiled_rows(image, blurred_upscale(2), 2, 24, 8, 1, to_uint8, 8))
    shuffled = asyncio.run(run_tiled_rows(image, blurred_upscale(2, delay=True), 2, 24, 8, 1, to_uint8, 8))
    assert np.array_equal(in_order, shuffled)
    assert np.array_equal(in_order, to_uint8(asyncio.run(run_tiled(image, blurred_upscale(2), 2, 24, 8))))


def test_float_window_is_one_band_not_the_output() -> None:
    """1024x1024 at x4: the whole float output is 201 MB; the banded run's float working set is a band of it."""
    height = width = 1024
    channels, scale, tile, overlap, in_flight = 3, 4, 64, 8, 8
    full_float = channels * height * scale * width * scale * 4
    result_bytes = full_float // 4  # the uint8 result itself
    infer, to_uint8 = blurred_upscale(scale), converter(channels, (-1, 1))
    image = image_of(height, width, channels)
    th, tw = plan_tiles(height, width, tile, overlap)[0][2:]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = asyncio.run(infer(np.ascontiguousarray(image[:, :, :th, :tw])))
        infer_extra = tracemalloc.get_traced_memory()[1] - before - out.nbytes  # its input copy and temporaries
        del out
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        rows = asyncio.run(run_tiled_rows(image, infer, scale, tile, overlap, 1, to_uint8, in_flight))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert rows.shape == (height * scale, width * scale, channels) and rows.nbytes == result_bytes
    window = peak - result_bytes - infer_extra  # one tile is inferred at a time: its temporaries come on top
    bound = banded_window_bytes(height, width, channels, scale, tile, overlap, 1, in_flight)
    print(f"full float {full_float / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB (uint8 result {result_bytes / 1e6:.1f} MB,"
          f" infer temporaries {infer_extra / 1e6:.1f} MB), float window {window / 1e6:.1f} MB,"
          f" banded_window_bytes {bound / 1e6:.1f} MB")
    assert peak - result_bytes < 0.25 * full_float
    assert 0 < window <= bound < 0.25 * full_float


def test_window_bytes_follow_the_plan() -> None:
    """One band of the output, the tiles waiting to be blended, and a conversion block (float copy + 8-bit pixels) or
    a weighted tile, whichever is larger; the whole output when untiled."""
    band = 3 * 512 * 16384 * 4
    tile_out = 3 * 512 * 512 * 4
    block = 3 * (tiling.CONVERT_ELEMENTS // (3 * 16384)) * 16384
    product = tile_out + 512 * 512 * 4
    assert banded_window_bytes(4096, 4096, 3, 4, 128, 16) == band + 16 * tile_out + max(5 * block, product)
    assert banded_window_bytes(4096, 4096, 3, 4, 128, 16) < 0.05 * 3 * 16384 * 16384 * 4  # 156 MB of 3.2 GB
    assert banded_window_bytes(100, 60, 1, 2, 128, 16) >= 200 * 120 * 4  # one tile: its whole output
    with pytest.raises(ValueError, match="spatial multiple"):
        banded_window_bytes(100, 60, 1, 2, 32, 4, multiple=3)


def test_failing_tile_propagates_and_cancels_the_rest() -> None:
    started = failing_tile_started(lambda image, infer: run_tiled_rows(image, infer, 2, 64, 8, 1, converter(3, (0, 1)),
                                                                       4))
    assert started == 4  # only the tiles admitted by max_in_flight ever started


def test_failure_in_a_later_band_and_in_conversion_propagate() -> None:
    image = image_of(64, 64, 3)
    calls: list[int] = []
    good = blurred_upscale(2)

    async def late_failure(tile: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == 12:
            raise RuntimeError("band 3 failed")
        return await good(tile)

    with pytest.raises(RuntimeError, match="band 3 failed"):
        asyncio.run(run_tiled_rows(image, late_failure, 2, 16, 4, 1, converter(3, (0, 1)), 4))

    def refuse(block: np.ndarray) -> np.ndarray:
        raise ValueError("cannot convert")

    with pytest.raises(ValueError, match="cannot convert"):
        asyncio.run(run_tiled_rows(image, good, 2, 16, 4, 1, refuse))
    with pytest.raises(ValueError, match="to_uint8 returned 1 rows"):
        asyncio.run(run_tiled_rows(image, good, 2, 16, 4, 1, lambda block: to_pixels(block, TensorSpec("y", [3]))[:1]))


def test_bad_input_and_model_outputs_are_refused_like_run_tiled() -> None:
    to_uint8 = converter(3, (0, 1))
    image = np.zeros((1, 3, 5, 7), np.float32)
    with pytest.raises(ValueError, match="float32"):
        asyncio.run(run_tiled_rows(image.astype(np.float64), blurred_upscale(1), 1, 4, 1, 1, to_uint8))
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        asyncio.run(run_tiled_rows(image[0], blurred_upscale(1), 1, 4, 1, 1, to_uint8))
    with pytest.raises(ValueError, match="scale must be >= 1"):
        asyncio.run(run_tiled_rows(image, blurred_upscale(1), 0, 4, 1, 1, to_uint8))
    for bad in (lambda x: np.concatenate([x, x]), lambda x: x[None], lambda x: x[:, :, :-1]):
        async def broken(x: np.ndarray, f=bad) -> np.ndarray:
            return f(x)
        with pytest.raises(ValueError, match="model output shape"):
            asyncio.run(run_tiled_rows(image, broken, 1, 4, 1, 1, to_uint8))
        with pytest.raises(ValueError, match="model output shape"):
            asyncio.run(run_tiled_rows(image, broken, 1, 0, 0, 1, to_uint8))  # untiled too

    async def channels_vary(x: np.ndarray) -> np.ndarray:
        return x if x[0, 0, 0, 0] == 0 else x[:, :1]

    varied = np.zeros((1, 3, 8, 8), np.float32)
    varied[..., 4:] = 1
    with pytest.raises(ValueError, match="disagree on channels"):
        asyncio.run(run_tiled_rows(varied, channels_vary, 1, 4, 0, 1, to_uint8))


def test_small_image_goes_straight_to_infer_and_is_converted_whole() -> None:
    seen: list[tuple[int, ...]] = []
    inner = blurred_upscale(2)

    async def infer(tile: np.ndarray) -> np.ndarray:
        seen.append(tile.shape)
        return await inner(tile)

    image = image_of(30, 20, 1)
    to_uint8 = converter(1, (-1, 1))
    rows = asyncio.run(run_tiled_rows(image, infer, 2, 32, 8, 1, to_uint8))
    assert seen == [(1, 1, 30, 20)] and rows.shape == (60, 40)
    assert np.array_equal(rows, to_uint8(asyncio.run(inner(image))))
    asyncio.run(run_tiled_rows(image, infer, 2, 0, 8, 1, to_uint8))
    assert seen[-1] == (1, 1, 30, 20)


# -- the image API over a real server ----------------------------------------------------------------------------

CARDS = {
    "conv-sr": ModelCard(name="conv-sr", task="super_resolution", architecture="conv-x2",
                         inputs=[TensorSpec("x", [3, -1, -1], value_range=[-1, 1])],
                         outputs=[TensorSpec("y", [3, -1, -1], value_range=[-1, 1])], scale=2, spatial_multiple=4),
    "conv-sr01": ModelCard(name="conv-sr01", task="super_resolution", architecture="conv-x2",
                           inputs=[TensorSpec("x", [3, -1, -1], value_range=[0, 1])],
                           outputs=[TensorSpec("y", [3, -1, -1], value_range=[0, 1])], scale=2),
}


@pytest.fixture(scope="module")
def conv_server(tmp_path_factory: pytest.TempPathFactory):
    repo = tmp_path_factory.mktemp("rows") / "repo"
    for name, card in CARDS.items():
        folder = repo / name
        (folder / "1").mkdir(parents=True)
        (folder / "1" / MODEL_FILE).write_bytes(sr_model(2, seed=3))
        (folder / CARD_FILE).write_text(card.to_json())
        (folder / CONFIG_FILE).write_text(triton_config(card))
    thread = ServerThread(server_config(repo, max_message_mb=4))
    thread.start()
    yield thread
    thread.stop()


def float_path_bytes(server, name: str, data: bytes, tile: int, overlap: int, fmt: str, quality: int = 0) -> bytes:
    """The reply the image API gave before banding: run_tiled's float output, cropped, then converted and encoded."""
    card = CARDS[name]
    spec_in, spec_out = card.inputs[0], card.outputs[0]
    runner = chosen_runner(server, name)
    x = to_tensor(decode_image(data, 1 << 30), spec_in)

    async def infer(part: np.ndarray) -> np.ndarray:
        return from_layout(runner.run({"x": to_layout(part, spec_in)})["y"], spec_out)

    multiple = max(1, card.spatial_multiple)
    y = asyncio.run(run_tiled(pad_to_multiple(x, multiple), infer, card.scale, tile, overlap, multiple))
    y = y[:, :, : x.shape[2] * card.scale, : x.shape[3] * card.scale]
    return _to_encoded(y, spec_out, fmt, quality)[1]


@pytest.mark.parametrize("name", sorted(CARDS))
@pytest.mark.parametrize("size", [(70, 53), (97, 131)])
def test_image_api_replies_are_unchanged(conv_server, name: str, size: tuple[int, int],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rgb = np.random.default_rng(sum(size)).integers(0, 256, (*size, 3), dtype=np.uint8)
    data = png_bytes(rgb)
    banded: list[int] = []

    async def counted(*args, **kwargs) -> np.ndarray:  # the real run_tiled_rows, counted (the server is in-process)
        banded.append(1)
        return await run_tiled_rows(*args, **kwargs)

    monkeypatch.setattr(image_api, "run_tiled_rows", counted)
    with ImagesClient(f"127.0.0.1:{conv_server.port}", timeout=30) as client:
        png = client.super_resolve(name, data, ImageOptions(tile_size=32, tile_overlap=8))
        jpeg = client.super_resolve(name, data, ImageOptions(tile_size=32, tile_overlap=8, output_format="JPEG",
                                                             jpeg_quality=85))
        whole = client.super_resolve(name, data, ImageOptions(tile_size=0))
    assert len(banded) == 2  # the two tiled requests took the banded path, the whole one the float path
    assert png.tiles > 4 and (png.width, png.height) == (size[1] * 2, size[0] * 2) and whole.tiles == 1
    assert png.image == float_path_bytes(conv_server, name, data, 32, 8, "PNG")
    assert jpeg.image == float_path_bytes(conv_server, name, data, 32, 8, "JPEG", 85)
    assert whole.image == float_path_bytes(conv_server, name, data, 0, 0, "PNG")
    assert png.image != whole.image  # the tiled request really was tiled (seams of a 3x3 conv stack differ a little)


def test_grey_output_through_rows_matches_the_float_path(tmp_path: Path) -> None:
    """A 1-channel output takes to_pixels' (H, W) shape; rows stack the same way."""
    spec = TensorSpec("y", [1, -1, -1], value_range=[0, 1])
    image = image_of(50, 70, 1, seed=5)
    floats = asyncio.run(run_tiled(image, blurred_upscale(2), 2, 24, 8, 1))
    rows = asyncio.run(run_tiled_rows(image, blurred_upscale(2), 2, 24, 8, 1, lambda b: to_pixels(b[..., :133], spec)))
    assert rows.shape == (100, 133)
    assert np.array_equal(rows[:97], to_pixels(floats[:, :, :97, :133], spec))
