"""Picture helpers: grid layout and pixels, captions drawn in the header, exact enlargement, real PNG bytes."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ganserve.core.image_metrics import to_uint8
from ganserve.core.pictures import enlarge, enlarge_to, labelled_row, picture_grid, png_bytes, stack, to_pil

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _batch(seed: int, n: int = 2, h: int = 4, w: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 3, h, w)).astype(np.float32)


def test_picture_grid_puts_items_in_rows_and_columns_side_by_side() -> None:
    cols = [_batch(1), _batch(2), _batch(3)]
    grid = picture_grid(cols)
    assert grid.shape == (2 * 4, 3 * 5, 3) and grid.dtype == np.uint8
    for i in range(2):
        for c, col in enumerate(cols):
            block = grid[i * 4:(i + 1) * 4, c * 5:(c + 1) * 5]
            assert np.array_equal(block, to_uint8(col[i].transpose(1, 2, 0)))


def test_to_pil_is_rgb_with_the_rounding_rule() -> None:
    x = np.linspace(-0.1, 1.1, 3 * 7 * 3).reshape(3, 7, 3)
    img = to_pil(x)
    assert img.mode == "RGB" and img.size == (7, 3)
    assert np.array_equal(np.asarray(img), to_uint8(x))


def test_labelled_row_pastes_panels_under_drawn_captions() -> None:
    a = Image.new("RGB", (30, 20), (200, 10, 10))
    b = Image.new("RGB", (40, 20), (10, 200, 10))
    sheet = labelled_row([(a, "input"), (b, "model")], header=16)
    assert sheet.size == (70, 36)
    px = np.asarray(sheet)
    assert np.array_equal(px[16:, :30], np.asarray(a)) and np.array_equal(px[16:, 30:], np.asarray(b))
    for x0, x1 in ((0, 30), (30, 70)):  # each caption leaves dark pixels in its own part of the white header
        head = px[:16, x0:x1]
        assert (head.min(axis=2) < 128).sum() > 5
    blank = np.asarray(labelled_row([(a, ""), (b, "")]))
    assert (blank[:16] == 255).all()


def test_stack_puts_pictures_one_under_another_on_white() -> None:
    wide, narrow = Image.new("RGB", (10, 3), (1, 2, 3)), Image.new("RGB", (6, 4), (9, 8, 7))
    px = np.asarray(stack([wide, narrow]))
    assert px.shape == (7, 10, 3)
    assert (px[:3] == (1, 2, 3)).all() and (px[3:, :6] == (9, 8, 7)).all() and (px[3:, 6:] == 255).all()


def test_enlarge_is_exact_nearest_neighbour() -> None:
    src = np.random.default_rng(4).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    big = np.asarray(enlarge(Image.fromarray(src), 3))
    assert big.shape == (15, 21, 3)
    assert np.array_equal(big, np.repeat(np.repeat(src, 3, axis=0), 3, axis=1))


def test_enlarge_to_makes_small_pictures_visible_and_leaves_large_ones() -> None:
    digit = Image.fromarray(np.random.default_rng(6).integers(0, 256, (16, 16), dtype=np.uint8))
    shown = enlarge_to(digit, 192)
    assert shown.mode == "RGB" and shown.size == (192, 192)
    grey = np.asarray(digit)
    assert np.array_equal(np.asarray(shown)[..., 0], np.repeat(np.repeat(grey, 12, axis=0), 12, axis=1))
    assert enlarge_to(Image.new("RGB", (40, 50)), 140).size == (120, 150)  # the whole factor nearest 140/50
    tall = Image.new("L", (300, 200), 77)
    kept = enlarge_to(tall, 192)
    assert kept.mode == "RGB" and kept.size == (300, 200) and np.asarray(kept)[0, 0].tolist() == [77, 77, 77]


def test_png_bytes_are_a_lossless_png() -> None:
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    for img in (rgb, grey, rgb[:, ::2]):  # a strided view too
        data = png_bytes(img)
        assert data[:8] == PNG_SIGNATURE
        with Image.open(io.BytesIO(data)) as back:
            assert back.format == "PNG" and np.array_equal(np.asarray(back), img)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    assert png_bytes(rgb) == buf.getvalue()  # the bytes demo_tasks.png and runlog.write_png wrote
