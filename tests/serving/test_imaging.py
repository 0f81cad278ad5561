"""Decoding limits and the card-driven tensor mapping."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from ganserve.core.contract import TensorSpec
from ganserve.serving.imaging import decode_image, encode_image, pad_to_multiple, to_pixels, to_tensor
from ganserve.serving.status import ServingError


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming a huge size, with a few bytes of data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _code(data: bytes, max_pixels: int = 10_000) -> grpc.StatusCode:
    with pytest.raises(ServingError) as info:
        decode_image(data, max_pixels)
    return info.value.code


def test_bad_images_get_clear_codes() -> None:
    good = png_bytes(np.zeros((8, 8, 3), np.uint8))
    assert _code(b"") == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(b"GIF89a not a png") == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(good[: len(good) // 2]) == grpc.StatusCode.INVALID_ARGUMENT
    assert _code(bomb_png(100_000, 100_000)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _code(good, max_pixels=63) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert decode_image(good, 64).size == (8, 8)


def test_value_range_round_trip_is_exact() -> None:
    rgb = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3) * 3
    spec = TensorSpec("x", [3, -1, -1], value_range=[-1, 1])
    x = to_tensor(Image.fromarray(rgb), spec)
    assert x.shape == (1, 3, 5, 6) and x.dtype == np.float32
    assert x.min() == pytest.approx(-1.0) and x[0, 2, 0, 0] == pytest.approx(6 / 255 * 2 - 1)
    assert np.array_equal(to_pixels(x, spec), rgb)


def test_grey_fixed_size_input_is_resized() -> None:
    spec = TensorSpec("pixels", [1, 4, 4], value_range=[0, 1])
    x = to_tensor(Image.fromarray(np.full((10, 7, 3), 255, np.uint8)), spec)
    assert x.shape == (1, 1, 4, 4) and np.allclose(x, 1.0)


def test_reflect_padding_to_multiple() -> None:
    x = np.arange(5 * 6, dtype=np.float32).reshape(1, 1, 5, 6)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 1, 8, 8)
    assert np.array_equal(padded[0, 0, 5], x[0, 0, 3, list(range(6)) + [4, 3]])
    assert pad_to_multiple(x, 1) is x


def test_jpeg_encoding_quality() -> None:
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    small, large = encode_image(img, "JPEG", 10), encode_image(img, "JPEG", 95)
    assert small[:2] == b"\xff\xd8" and len(small) < len(large)
    with pytest.raises(ServingError):
        encode_image(img, "JPEG", 101)


@pytest.mark.parametrize("value_range", [[0.0, 1.0], [-1.0, 1.0], None])
@pytest.mark.parametrize("channels", [3, 1])
def test_to_pixels_rounds_like_the_documented_rule(value_range, channels: int) -> None:
    """8-bit pixels are rint(clip((y - lo) / (hi - lo), 0, 1) * 255), out-of-range values and .5 ties included."""
    spec = TensorSpec("o", [channels, -1, -1], "FP32", "image", "NCHW", value_range)
    lo, hi = value_range or (0.0, 1.0)
    rng = np.random.default_rng(channels)
    y = rng.uniform(lo - 0.2, hi + 0.2, (1, channels, 37, 53)).astype(np.float32)
    y[0, 0, 0, :4] = lo + (hi - lo) * np.array([0.5, 1.5, 127.5, 254.5], np.float32) / 255  # ties round to even
    want = np.rint(np.clip((y[0].astype(np.float64) - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)
    got = to_pixels(y, spec)
    got = got[None] if channels == 1 else got.transpose(2, 0, 1)
    assert got.shape == want.shape and np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert np.mean(got == want) > 0.999  # float32 vs float64 arithmetic may differ at a tie, nowhere else


def test_nhwc_tensors_fixed_non_square_sizes_and_default_range() -> None:
    """Layouts, sizes and ranges the mutation run found unchecked: an NHWC spec's channels and fixed size come from
    its own axes, a fixed 4x6 (H x W) input is resized to exactly that, and a spec without a range is [0, 1]."""
    from ganserve.serving.imaging import channels_of, fixed_size, from_layout, to_layout, to_pixels

    nhwc = TensorSpec("x", [4, 6, 1], layout="NHWC")
    nchw = TensorSpec("x", [3, 4, 6], value_range=[-1, 1])
    assert (channels_of(nhwc), fixed_size(nhwc)) == (1, (4, 6))
    assert (channels_of(nchw), fixed_size(nchw)) == (3, (4, 6))
    assert fixed_size(TensorSpec("x", [3, -1, 6])) is None and fixed_size(TensorSpec("x", [3, 4, -1])) is None
    assert channels_of(TensorSpec("x", [-1, -1, -1])) == 3
    rgb = np.random.default_rng(2).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    t = to_tensor(Image.fromarray(rgb), nchw)
    want = np.asarray(Image.fromarray(rgb).resize((6, 4), Image.Resampling.BILINEAR), np.float32) / 255 * 2 - 1
    assert t.shape == (1, 3, 4, 6) and np.allclose(t[0], want.transpose(2, 0, 1), atol=1e-6)
    grey = to_tensor(Image.fromarray(rgb), TensorSpec("x", [1, -1, -1]))  # no range: [0, 1]
    assert grey.min() >= 0 and grey.max() <= 1 and grey.shape == (1, 1, 9, 13)
    assert np.allclose(grey[0, 0], np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255)
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    spec = TensorSpec("y", [-1, -1, 3], layout="NHWC")
    assert to_layout(x, spec).shape == (2, 4, 5, 3) and np.array_equal(from_layout(to_layout(x, spec), spec), x)
    one = np.full((2, 1, 2, 2), 0.5, np.float32)
    one[1] = 1.0  # only the first image of a batch is turned into pixels
    assert to_pixels(one, TensorSpec("y", [1, -1, -1])).tolist() == [[128, 128], [128, 128]]


def test_jpeg_quality_bounds_and_the_pixel_limit_message() -> None:
    img = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    assert encode_image(img, "JPEG", 100).startswith(b"\xff\xd8") and encode_image(img, "JPEG", 1)
    for bad in (101, -1):
        with pytest.raises(ServingError, match=f"jpeg_quality must be 1..100, got {bad}"):
            encode_image(img, "JPEG", bad)
    data = encode_image(Image.fromarray(np.zeros((3, 5, 3), np.uint8)))
    with pytest.raises(ServingError, match=r"image is 5x3 = 15 pixels; the limit is 14$"):
        decode_image(data, 14)
    assert decode_image(data, 15).size == (5, 3)
