"""The image codecs behind the image API: fast PNG writer, Pillow fallback, JPEG, and the codec benchmark."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganserve.benchmarks.codecs import photo, sr_like
from ganserve.core.image_metrics import psnr
from ganserve.serving import imaging
from ganserve.serving.imaging import decode_image, encode_image

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4096 * 4096


def _pillow_png(img: Image.Image, level: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


@pytest.fixture()
def pillow_only(monkeypatch):
    """The fast PNG writer switched off, as if it were not installed."""
    monkeypatch.setattr(imaging, "FAST_PNG", False)


@pytest.mark.parametrize("content", [photo, sr_like])
def test_rgb_png_round_trip_is_bit_exact(content) -> None:
    src = content(96)
    data = encode_image(Image.fromarray(src), "PNG")
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    back = decode_image(data, LIMIT)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), src)


def test_grey_png_round_trip_is_bit_exact() -> None:
    grey = np.asarray(Image.fromarray(photo(80)).convert("L"))
    back = decode_image(encode_image(Image.fromarray(grey), "PNG"), LIMIT)
    assert back.mode == "L" and np.array_equal(np.asarray(back), grey)


def test_fast_png_writer_is_used_and_stays_small() -> None:
    pytest.importorskip("fpng")
    img = Image.fromarray(sr_like(256))
    fast, slow = encode_image(img, "PNG"), _pillow_png(img, imaging.PNG_COMPRESS_LEVEL)
    assert imaging.FAST_PNG and imaging.backend_names()["PNG"].startswith("fpng")
    assert fast != slow  # a different writer made it
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(fast))), np.asarray(img))
    assert len(fast) < 1.25 * len(slow)  # measured 1.11x on this content (benchmarks/codecs.py)


def test_fallback_writes_what_pillow_writes(pillow_only) -> None:
    img = Image.fromarray(photo(64))
    data = encode_image(img, "PNG")
    assert data == _pillow_png(img, imaging.PNG_COMPRESS_LEVEL)
    assert imaging.backend_names() == {"PNG": "Pillow zlib level 1", "JPEG": "Pillow"}
    assert np.array_equal(np.asarray(decode_image(data, LIMIT)), np.asarray(img))


def test_fallback_when_library_is_missing(monkeypatch) -> None:
    monkeypatch.setattr(imaging, "_fpng", None)
    img = Image.fromarray(sr_like(64))
    assert encode_image(img, "PNG") == _pillow_png(img, imaging.PNG_COMPRESS_LEVEL)
    assert imaging.backend_names()["PNG"].startswith("Pillow")


def test_jpeg_decode_matches_pillow_and_source(monkeypatch) -> None:
    src = photo(128)
    img = Image.fromarray(src)
    data = encode_image(img, "JPEG")
    monkeypatch.setattr(imaging, "FAST_PNG", False)
    assert encode_image(img, "JPEG") == data  # the PNG switch never changes JPEG output
    got = np.asarray(decode_image(data, LIMIT)).astype(int)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert got.shape == src.shape and np.abs(got - reference).max() <= 1
    assert psnr(got.astype(np.uint8), src, data_range=255.0) > 30.0


def test_codec_benchmark_writes_rows(tmp_path) -> None:
    result = subprocess.run([sys.executable, "-m", "ganserve.benchmarks.codecs", "--sizes", "64", "--repeats", "1",
                             "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "CPU:" in result.stdout
    report = json.loads((tmp_path / "codecs.json").read_text())
    encoders = report["encoders"]
    assert {r["codec"] for r in encoders} >= {"pillow-png-l0", "pillow-png-l1", "pillow-png-l6", "pillow-jpeg-q90"}
    assert all(r["size"] == 64 and r["bytes"] > 0 and r["encode_ms"] > 0 for r in encoders)
    assert all(r["lossless"] for r in encoders if r["format"] == "PNG")
    assert all(25.0 < r["psnr_db"] < 60.0 for r in encoders if r["format"] == "JPEG")
    assert report["decoders"] and report["serving"] and report["machine"]["cpu_model"]
    assert "| photo | 64 | pillow-png-l1 |" in (tmp_path / "codecs.md").read_text()
