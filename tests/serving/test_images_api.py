"""ganserve.v1.Images round trips through the Python client: card-driven pre/post-processing and tiling."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ganserve.serving.client import ImageOptions, ImagesClient
from test_imaging import png_bytes


@pytest.fixture()
def images(server):
    with ImagesClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        yield client


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_super_resolve_pads_tiles_and_crops(images) -> None:
    rgb = _rgb(37, 29)  # not a multiple of the card's spatial_multiple (4)
    expected = rgb.repeat(2, 0).repeat(2, 1)
    whole = images.super_resolve("sr2", png_bytes(rgb), ImageOptions(tile_size=0))
    tiled = images.super_resolve("sr2", png_bytes(rgb), ImageOptions(tile_size=16, tile_overlap=4))
    assert (whole.width, whole.height, whole.tiles) == (58, 74, 1)
    assert tiled.tiles > 4 and (tiled.width, tiled.height) == (58, 74)
    assert np.array_equal(_decode(whole.image), expected)
    assert np.array_equal(_decode(tiled.image), expected)
    assert whole.timing.total_ms >= whole.timing.infer_ms > 0 and whole.model_version == "1"


def test_jpeg_in_and_out(images) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(buf, format="JPEG", quality=95)
    reply = images.super_resolve("sr2", buf.getvalue(), ImageOptions(output_format="JPEG", jpeg_quality=90))
    assert reply.image[:2] == b"\xff\xd8" and (reply.width, reply.height) == (32, 32)
    assert abs(int(_decode(reply.image).mean()) - 128) <= 2


def test_classify_top_k(images) -> None:
    reply = images.classify("digits", png_bytes(np.full((9, 9, 3), 255, np.uint8)), top_k=2)
    assert [s.label for s in reply.scores] == ["bright", "mid"]
    logits = np.array([10.0, 5.0, 0.0])
    assert reply.scores[0].probability == pytest.approx(np.exp(10) / np.exp(logits).sum(), rel=1e-5)
    dark = images.classify("digits", png_bytes(np.zeros((4, 4, 3), np.uint8)))
    assert dark.scores[0].label == "dark" and len(dark.scores) == 3


def test_age_face_uses_the_condition(images) -> None:
    rgb = np.full((8, 8, 3), 100, np.uint8)
    old = _decode(images.age_face("aging", png_bytes(rgb), "old").image).astype(int)
    young = _decode(images.age_face("aging", png_bytes(rgb), "0").image).astype(int)
    # value range [-1, 1]: +/-0.5 is +/-63.75 in 8-bit
    assert np.all(old == 164) and np.all(young == 36)


def test_list_models(images, server) -> None:
    models = {m.name: m for m in images.list_models().models}
    assert models["sr2"].task == "super_resolution" and models["sr2"].scale == 2 and models["sr2"].state == "READY"
    # the provider the server measured fastest for this model at load (CPU or OpenVINO, a timing decision on a tiny
    # model): ListModels reports the one that serves
    _, served = server.server.models.get("sr2", "")
    assert models["sr2"].provider == served.choice.candidate.provider != ""
    assert list(models["aging"].condition_labels) == ["young", "adult", "old"] and not models["aging"].tile_safe
    assert list(models["digits"].labels) == ["bright", "mid", "dark"]
    assert models["broken"].state == "UNAVAILABLE" and models["broken"].reason
