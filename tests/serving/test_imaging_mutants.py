"""Imaging behaviour the mutation run (mutation/run.py) found unchecked: which writer makes the image API's reply
bytes (encode_pixels) with the fast PNG writer on and off, its default JPEG quality, and fixed-size inputs whose
image is the wrong shape but has one of the right sides."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ganserve.core.contract import TensorSpec
from ganserve.serving import imaging
from ganserve.serving.imaging import DEFAULT_JPEG_QUALITY, PNG_COMPRESS_LEVEL, encode_pixels, to_tensor
from test_codecs import _pillow_png, pillow_only  # noqa: F401  (pillow_only is a fixture)

RGB = np.random.default_rng(3).integers(0, 256, (24, 40, 3), dtype=np.uint8)
GREY = np.random.default_rng(4).integers(0, 256, (24, 40), dtype=np.uint8)


def _decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_reply_pngs_come_from_fpng_for_rgb_and_pillow_for_grey() -> None:
    """With fpng installed an RGB reply is fpng's PNG of the pixels; a grey one (which fpng cannot write) is
    Pillow's at PNG_COMPRESS_LEVEL; both decode to the very pixels."""
    fpng = pytest.importorskip("fpng")
    assert imaging.FAST_PNG and imaging.backend_names()["PNG"] == "fpng (RGB), Pillow (grey)"
    rgb, grey = encode_pixels(RGB, "PNG"), encode_pixels(GREY, "PNG")
    assert rgb == fpng.from_ndarray(RGB)
    assert grey == _pillow_png(Image.fromarray(GREY), PNG_COMPRESS_LEVEL)
    assert np.array_equal(_decoded(rgb), RGB) and np.array_equal(_decoded(grey), GREY)


def test_with_the_fast_writer_off_pillow_writes_every_reply_png(pillow_only: None) -> None:  # noqa: F811
    """FAST_PNG = False: RGB and grey replies are both Pillow's PNG at PNG_COMPRESS_LEVEL, and backend_names says
    so (benchmarks and logs report the writer actually used)."""
    assert imaging.backend_names() == {"PNG": f"Pillow zlib level {PNG_COMPRESS_LEVEL}", "JPEG": "Pillow"}
    for pixels in (RGB, GREY):
        data = encode_pixels(pixels, "PNG")
        assert data == _pillow_png(Image.fromarray(pixels), PNG_COMPRESS_LEVEL)
        assert np.array_equal(_decoded(data), pixels)


def test_a_jpeg_reply_without_a_quality_uses_the_default_quality() -> None:
    """encode_pixels(..., "JPEG") with no quality writes what Pillow writes at DEFAULT_JPEG_QUALITY (90)."""
    assert DEFAULT_JPEG_QUALITY == 90
    for pixels in (RGB, GREY):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        assert encode_pixels(pixels, "JPEG") == buf.getvalue()


@pytest.mark.parametrize("spec", [TensorSpec("x", [3, 4, 6]), TensorSpec("x", [4, 6, 3], layout="NHWC")],
                         ids=["NCHW", "NHWC"])
def test_a_fixed_4x6_input_resizes_any_other_shape_and_keeps_an_exact_fit(spec: TensorSpec) -> None:
    """A fixed H=4, W=6 input: a 6x6 image (right width, wrong height) is resized to 4x6 like any other size, and a
    6-wide, 4-high image is fed as it is, pixel for pixel."""
    square = np.random.default_rng(5).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    got = to_tensor(Image.fromarray(square), spec)
    want = np.asarray(Image.fromarray(square).resize((6, 4), Image.Resampling.BILINEAR), np.float32) / 255
    assert got.shape == (1, 3, 4, 6) and np.allclose(got[0], want.transpose(2, 0, 1), atol=1e-6)
    fit = RGB[:4, :6]
    assert np.array_equal(to_tensor(Image.fromarray(fit), spec)[0], fit.transpose(2, 0, 1) / np.float32(255))
