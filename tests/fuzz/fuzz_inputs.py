"""Image bytes for the fuzz tests: real PNG/JPEG files made with Pillow, cut short, bit-flipped, or lying about
their size in the header (tests/fuzz is on sys.path while its tests run)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

# The modes each format can write, as Pillow saves them.
PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16")
JPEG_MODES = ("L", "RGB", "CMYK")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"


def pixels(mode: str, width: int, height: int, seed: int) -> np.ndarray:
    """Random pixels for a mode, shaped as np.asarray(Image) returns them."""
    rng = np.random.default_rng(seed)
    if mode == "1":
        return rng.integers(0, 2, (height, width)).astype(bool)
    if mode == "I;16":
        return rng.integers(0, 65536, (height, width)).astype("<u2")
    channels = {"L": 1, "P": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, 256, shape).astype(np.uint8)


def make_image(mode: str, width: int, height: int, fmt: str = "PNG", seed: int = 0, quality: int = 90) -> bytes:
    """A valid PNG or JPEG of random pixels (a P image gets a random palette)."""
    arr = pixels(mode, width, height, seed)
    if mode == "P":
        img = Image.fromarray(arr, "L").convert("P")
        img.putpalette(np.random.default_rng(seed + 1).integers(0, 256, 768).astype(np.uint8).tobytes())
        img.frombytes(arr.tobytes())
    elif mode == "1":
        img = Image.fromarray(arr.astype(np.uint8) * 255, "L").convert("1")
    elif mode == "I;16":
        img = Image.frombytes("I;16", (width, height), arr.astype("<u2").tobytes())
    else:
        img = Image.fromarray(arr, mode)
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, format="JPEG", quality=quality)
    else:
        img.save(buf, format="PNG")
    return buf.getvalue()


def png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (its CRC fixed, so the header itself parses)."""
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    """``data`` with one bit flipped per position: bit ``p % 8`` of byte ``(p // 8) % len(data)``."""
    out = bytearray(data)
    for p in positions:
        out[(p // 8) % len(out)] ^= 1 << (p % 8)
    return bytes(out)
