"""Pictures for people (numpy and Pillow, torch-free): sample grids, captioned side-by-sides, exact enlargement, PNG.

Float pixels become 8 bits with the project's one rule, ``image_metrics.to_uint8``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from ganserve.core.image_metrics import to_uint8


def picture_grid(columns: list[np.ndarray]) -> np.ndarray:
    """Columns of NCHW batches in [0, 1] (one shape) -> one HxWx3 uint8 picture, one row per item."""
    rows = [np.concatenate([c[i] for c in columns], axis=2) for i in range(columns[0].shape[0])]
    return to_uint8(np.concatenate(rows, axis=1).transpose(1, 2, 0))


def to_pil(image: np.ndarray) -> Image.Image:
    """HxWx3 float pixels in [0, 1] -> an 8-bit RGB image."""
    return Image.fromarray(to_uint8(image))


def labelled_row(panels: list[tuple[Image.Image, str]], header: int = 16) -> Image.Image:
    """Images of one height side by side on white, each under a one-line caption ``header`` pixels tall."""
    sheet = Image.new("RGB", (sum(img.width for img, _ in panels), panels[0][0].height + header), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for img, caption in panels:
        sheet.paste(img, (x, header))
        draw.text((x + 3, 2), caption, fill="black")
        x += img.width
    return sheet


def stack(sheets: list[Image.Image]) -> Image.Image:
    """Pictures one under another, left-aligned on white (as wide as the widest)."""
    picture = Image.new("RGB", (max(s.width for s in sheets), sum(s.height for s in sheets)), "white")
    y = 0
    for sheet in sheets:
        picture.paste(sheet, (0, y))
        y += sheet.height
    return picture


def enlarge(img: Image.Image, factor: int) -> Image.Image:
    """Nearest-neighbour enlargement by a whole factor: every pixel becomes a factor x factor block."""
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def enlarge_to(img: Image.Image, height: int) -> Image.Image:
    """An RGB copy of ``img``; one shorter than ``height`` is enlarged (nearest, by the whole factor closest to
    height / img.height) so that a 16-pixel digit is visible."""
    rgb = img.convert("RGB")
    if img.height >= height:
        return rgb
    return enlarge(rgb, max(1, round(height / img.height)))


def png_bytes(image: np.ndarray) -> bytes:
    """HxWx3 (or HxW) uint8 pixels -> the bytes of a PNG file (Pillow's default compression)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()
