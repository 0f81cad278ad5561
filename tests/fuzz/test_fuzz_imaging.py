"""Fuzz the image decoder (serving/imaging.py decode_image, then to_tensor as the image API calls them).

Whatever bytes come in, the answer is either the image Pillow itself decodes from them (same mode, size and
pixels) or a ServingError the client can act on: INVALID_ARGUMENT (not an image, truncated, corrupt) or
RESOURCE_EXHAUSTED (over the pixel limit), with a message. Any other exception would reach the client as INTERNAL.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from fuzz_inputs import JPEG_MODES, JPEG_SOI, PNG_MODES, PNG_SIGNATURE, flip_bits, make_image, pixels, png_with_size
from ganserve.core.contract import TensorSpec
from ganserve.serving.imaging import decode_image, to_tensor
from ganserve.serving.status import ServingError

FUZZ = settings.get_profile("fuzz")
CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
# The input tensors the image API feeds: 3 and 1 channels, dynamic and fixed size, two value ranges.
SPECS = [TensorSpec("rgb", [3, -1, -1], value_range=[-1, 1]), TensorSpec("grey", [1, 4, 4], value_range=[0, 1])]


def _pillow(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data), formats=["PNG", "JPEG"])
    img.load()
    return img


def check_decode(data: bytes, max_pixels: int) -> Image.Image | None:
    """Decode; on success compare with Pillow's own decode and run to_tensor; on failure check the error."""
    try:
        img = decode_image(data, max_pixels)
    except ServingError as err:
        assert err.code in CLEAR, (err.code, err.message)
        assert err.message.strip()
        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert err.http_status == 413
        return None
    width, height = img.size
    assert width * height <= max_pixels
    ref = _pillow(data)
    assert (img.mode, img.size, img.format) == (ref.mode, ref.size, ref.format)
    assert np.array_equal(np.asarray(img), np.asarray(ref))
    for spec in SPECS:
        x = to_tensor(img, spec)
        c = spec.shape[0]
        assert x.dtype == np.float32
        assert x.shape == ((1, c, 4, 4) if spec.shape[1] > 0 else (1, c, height, width))
        lo, hi = spec.value_range
        assert np.isfinite(x).all() and x.min() >= lo - 1e-6 and x.max() <= hi + 1e-6
    return img


sizes = st.integers(1, 40)
png_images = st.builds(lambda m, w, h, s: make_image(m, w, h, "PNG", s), st.sampled_from(PNG_MODES), sizes, sizes,
                       st.integers(0, 2**16))
jpeg_images = st.builds(lambda m, w, h, s, q: make_image(m, w, h, "JPEG", s, q), st.sampled_from(JPEG_MODES), sizes,
                        sizes, st.integers(0, 2**16), st.integers(1, 100))
real_images = st.one_of(png_images, jpeg_images)


@settings(FUZZ, max_examples=300, deadline=None, derandomize=True)
@given(data=st.one_of(st.binary(max_size=600),
                      st.binary(max_size=600).map(lambda b: PNG_SIGNATURE + b),
                      st.binary(max_size=600).map(lambda b: JPEG_SOI + b)),
       max_pixels=st.integers(1, 10_000))
@example(data=b"", max_pixels=100)
@example(data=PNG_SIGNATURE, max_pixels=100)
@example(data=JPEG_SOI, max_pixels=100)
def test_random_bytes_decode_or_fail_clearly(data: bytes, max_pixels: int) -> None:
    check_decode(data, max_pixels)


@settings(FUZZ, max_examples=200, deadline=None, derandomize=True)
@given(mode=st.sampled_from(PNG_MODES + tuple(f"jpeg:{m}" for m in JPEG_MODES)), width=sizes, height=sizes,
       seed=st.integers(0, 2**16), headroom=st.integers(-50, 50))
def test_valid_images_of_every_mode_decode_exactly(mode: str, width: int, height: int, seed: int,
                                                   headroom: int) -> None:
    """Valid PNG (lossless: the very pixels written) and JPEG (Pillow's decode) of random size and mode; a pixel
    limit just above or below the size accepts or refuses it."""
    fmt, mode = ("JPEG", mode[5:]) if mode.startswith("jpeg:") else ("PNG", mode)
    data = make_image(mode, width, height, fmt, seed)
    max_pixels = max(1, width * height + headroom)
    img = check_decode(data, max_pixels)
    assert (img is None) == (width * height > max_pixels)
    if img is not None and fmt == "PNG":
        assert img.mode == mode
        assert np.array_equal(np.asarray(img), pixels(mode, width, height, seed))


@settings(FUZZ, max_examples=300, deadline=None, derandomize=True)
@given(data=real_images, cut=st.floats(0, 1), flips=st.lists(st.integers(0, 2**20), max_size=4))
def test_truncated_and_corrupted_images(data: bytes, cut: float, flips: list[int]) -> None:
    """Real files cut short anywhere and/or with a few bits flipped (headers, chunk lengths, CRCs, entropy data)."""
    damaged = data[: int(len(data) * cut)]
    if damaged and flips:
        damaged = flip_bits(damaged, flips)
    check_decode(damaged, 10_000)


@settings(FUZZ, max_examples=60, deadline=None, derandomize=True)
@given(data=png_images, width=st.integers(0, 2**31 - 1), height=st.integers(0, 2**31 - 1))
@example(data=make_image("RGB", 4, 4), width=2**31 - 1, height=2**31 - 1)  # a decompression bomb's header
@example(data=make_image("RGB", 4, 4), width=0, height=0)
@example(data=make_image("RGB", 4, 4), width=100, height=100)  # under the limit, but the data is for 4x4
def test_png_header_lying_about_its_size(data: bytes, width: int, height: int) -> None:
    """A header claiming any size costs nothing: over the limit is refused before decoding, under it the data
    does not fit the claim (or does, when the claim is the truth)."""
    check_decode(png_with_size(data, width, height), 10_000)


@pytest.mark.parametrize("mode", PNG_MODES)
def test_each_png_mode_reaches_both_tensor_layouts(mode: str) -> None:
    """Not random: every PNG mode once, so a mode to_tensor cannot convert fails here by name."""
    assert check_decode(make_image(mode, 5, 3, "PNG", 1), 100) is not None
