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


# -- survivors of a second, independent sample (mutation/run.py --seed 1) --------------------------------------------

def test_from_layout_moves_nhwc_channels_first_and_leaves_nchw_alone() -> None:
    """A (1, 4, 5, 3) NHWC output becomes (1, 3, 4, 5); an NCHW one comes back unchanged, whatever its sides."""
    y = np.arange(60, dtype=np.float32).reshape(1, 4, 5, 3)
    assert np.array_equal(imaging.from_layout(y, TensorSpec("y", [-1, -1, 3], layout="NHWC")), y.transpose(0, 3, 1, 2))
    z = np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5)
    out = imaging.from_layout(z, TensorSpec("y", [3, -1, -1]))
    assert out.shape == (1, 3, 4, 5) and np.array_equal(out, z)


def test_pad_to_multiple_pads_both_sides_up_to_the_multiple() -> None:
    """4 x 5 at multiple 4 -> 4 x 8 (width padded by 3, height by none); 5 x 4 -> 8 x 4; the original is kept."""
    x = np.random.default_rng(5).random((1, 3, 4, 5), dtype=np.float32)
    wide = imaging.pad_to_multiple(x, 4)
    assert wide.shape == (1, 3, 4, 8) and np.array_equal(wide[..., :5], x)
    tall = imaging.pad_to_multiple(x.transpose(0, 1, 3, 2), 4)
    assert tall.shape == (1, 3, 8, 4)


def test_to_pixels_maps_a_0_to_2_output_range_onto_0_to_255() -> None:
    """value_range [0, 2]: 0 -> 0, 1 -> 128 (rint of 127.5), 2 and above -> 255; the [0, 1] fast path is not taken."""
    y = np.array([0.0, 1.0, 2.0, 3.0], np.float32).reshape(1, 1, 1, 4)
    assert imaging.to_pixels(y, TensorSpec("y", [1, -1, -1], value_range=[0.0, 2.0])).tolist() == [[0, 128, 255, 255]]


def test_a_four_axis_spec_has_no_fixed_image_size() -> None:
    """fixed_size only reads (C, H, W) or (H, W, C) specs; any other rank is not a fixed image size."""
    assert imaging.fixed_size(TensorSpec("x", [1, 3, 4, 6])) is None
    assert imaging.fixed_size(TensorSpec("x", [3, 4, 6])) == (4, 6)


def test_encode_image_without_a_quality_writes_jpeg_at_the_default_quality() -> None:
    """encode_image(img, "JPEG") with no quality is Pillow's JPEG at DEFAULT_JPEG_QUALITY, not at quality 1."""
    img = Image.fromarray(RGB)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=DEFAULT_JPEG_QUALITY)
    assert imaging.encode_image(img, "JPEG") == buf.getvalue()
