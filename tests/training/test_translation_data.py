"""Paired and unpaired data: folder layouts, malformed folders, aligned crops, edge maps, the hidden transform."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganserve.core.errors import GanserveError
from ganserve.training.data.paired import PairedSource, edge_map, load_paired_folder, swap_direction
from ganserve.training.data.unpaired import (
    DOMAIN_A, DOMAIN_B, DUSK_GAINS, UnpairedSource, dusk, dusk_uint8, load_unpaired_folder, undusk,
)
from ganserve.training.data.images import BUILTIN_HELD_OUT


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _img(h: int, w: int, value: int) -> np.ndarray:
    arr = np.full((h, w, 3), value, dtype=np.uint8)
    arr[0, 0] = (1, 2, 3)
    return arr


def test_paired_a_b_folders_match_by_name(tmp_path: Path) -> None:
    for name, v in (("x", 10), ("y", 20)):
        _save(tmp_path / "A" / f"{name}.png", _img(40, 48, v))
        _save(tmp_path / "B" / f"{name}.png", _img(40, 48, v + 100))
    pairs = load_paired_folder(tmp_path, 32)
    assert [(int(a[5, 5, 0]), int(b[5, 5, 0])) for a, b in pairs] == [(10, 110), (20, 120)]
    assert [(int(a[5, 5, 0]), int(b[5, 5, 0])) for a, b in swap_direction(pairs, "BtoA")] == [(110, 10), (120, 20)]
    with pytest.raises(GanserveError, match="AtoB or BtoA"):
        swap_direction(pairs, "sideways")


def test_paired_side_by_side_splits_halves(tmp_path: Path) -> None:
    ab = np.concatenate([_img(40, 40, 30), _img(40, 40, 200)], axis=1)
    _save(tmp_path / "p1.png", ab)
    ((a, b),) = load_paired_folder(tmp_path, 32)
    assert a.shape == b.shape == (40, 40, 3)
    assert int(a[9, 9, 1]) == 30 and int(b[9, 9, 1]) == 200


def test_paired_mismatched_names_are_named(tmp_path: Path) -> None:
    _save(tmp_path / "A" / "one.png", _img(40, 40, 1))
    _save(tmp_path / "A" / "two.png", _img(40, 40, 1))
    _save(tmp_path / "B" / "one.png", _img(40, 40, 1))
    _save(tmp_path / "B" / "three.png", _img(40, 40, 1))
    with pytest.raises(GanserveError, match=r"mismatched pair names: 1 in A/ without a partner \(two.png\); "
                                            r"1 in B/ without a partner \(three.png\)"):
        load_paired_folder(tmp_path, 32)


@pytest.mark.parametrize("setup,message", [
    ("missing", "no such directory"),
    ("only_a", "has A/ but not the other"),
    ("empty_b", "holds no images"),
    ("empty", "no A/ and B/ subfolders and no side-by-side images"),
    ("odd", "need an even width"),
    ("sizes", "A is 40x40 but B is 48x40"),
    ("small", "smaller than the 32px crop"),
    ("garbage", "not a decodable image"),
])
def test_paired_malformed_folders(tmp_path: Path, setup: str, message: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    if setup == "only_a":
        _save(root / "A" / "x.png", _img(40, 40, 1))
    elif setup == "empty_b":
        _save(root / "A" / "x.png", _img(40, 40, 1))
        (root / "B").mkdir()
    elif setup == "odd":
        _save(root / "ab.png", _img(40, 81, 1))
    elif setup == "sizes":
        _save(root / "A" / "x.png", _img(40, 40, 1))
        _save(root / "B" / "x.png", _img(40, 48, 1))
    elif setup == "small":
        _save(root / "ab.png", _img(20, 80, 1))
    elif setup == "garbage":
        (root / "ab.png").write_bytes(b"not a png")
    with pytest.raises(GanserveError, match=message):
        load_paired_folder(root if setup != "missing" else tmp_path / "nowhere", 32)


def test_paired_source_crops_are_aligned_and_seeded() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 128, (50, 70, 3), dtype=np.uint8)
    source = PairedSource([(a, a + 100)], 16)
    x1, y1 = source.batch(6, torch.Generator().manual_seed(3))
    x2, y2 = source.batch(6, torch.Generator().manual_seed(3))
    assert x1.shape == y1.shape == (6, 3, 16, 16)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert torch.allclose(y1 - x1, torch.full_like(x1, 100 / 255), atol=1e-6)  # same window, same flip
    with pytest.raises(GanserveError, match="smaller than the 64px crop"):
        PairedSource([(a, a)], 64)


def test_edge_map_is_black_lines_on_white() -> None:
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    img[:, 32:] = 255  # one vertical step edge
    edges = edge_map(img)
    assert edges.shape == (64, 64, 3) and set(np.unique(edges)) == {0, 255}
    assert np.array_equal(edges[..., 0], edges[..., 2])
    dark_cols = np.where((edges[..., 0] == 0).any(axis=0))[0]
    assert set(dark_cols) <= {30, 31, 32, 33} and (edges[20:44, 31:33, 0] == 0).any(axis=1).all()


def test_dusk_is_the_stated_grading_and_invertible() -> None:
    x = np.random.default_rng(1).random((8, 8, 3))
    y = dusk(x)
    assert np.allclose(y[..., 1], DUSK_GAINS[1] * x[..., 1] ** 1.5)
    assert y.max() <= 1.0 and np.allclose(undusk(y), x, atol=1e-12)
    mid = dusk_uint8(np.full((1, 1, 3), 128, dtype=np.uint8))[0, 0]
    assert tuple(int(v) for v in mid) == tuple(round(g * (128 / 255) ** 1.5 * 255) for g in DUSK_GAINS)


def test_builtin_domains_are_disjoint_and_exclude_held_out() -> None:
    assert not set(DOMAIN_A) & set(DOMAIN_B)
    held = {e.split("[")[0] for e in BUILTIN_HELD_OUT}
    assert not {e for e in DOMAIN_A + DOMAIN_B if e in BUILTIN_HELD_OUT}
    assert "skimage:coffee[300:600]" in DOMAIN_B and "skimage:coffee" in held  # only coffee's right half trains


def test_unpaired_folders(tmp_path: Path) -> None:
    _save(tmp_path / "trainA" / "a1.png", _img(40, 40, 10))
    _save(tmp_path / "trainA" / "a2.jpg", _img(40, 50, 20))
    (tmp_path / "trainA" / "broken.png").write_bytes(b"xx")
    _save(tmp_path / "trainB" / "b1.png", _img(48, 40, 200))
    domain_a, domain_b, facts = load_unpaired_folder(tmp_path, 32)
    assert (len(domain_a), len(domain_b)) == (2, 1)
    assert facts["trainA"] == {"images": 2, "skipped_undecodable": 1, "skipped_too_small": 0}
    a, b = UnpairedSource(domain_a, domain_b, 32).batch(3, torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (3, 3, 32, 32) and float(b.mean()) > 0.7 > 0.2 > float(a.mean())


@pytest.mark.parametrize("setup,message", [
    ("no_b", "no trainB/ subfolder"),
    ("empty_b", r"domain trainB/ in .* is empty"),
    ("small_a", "none of 1 image files usable"),
    ("missing", "no such directory"),
])
def test_unpaired_malformed_folders(tmp_path: Path, setup: str, message: str) -> None:
    _save(tmp_path / "trainA" / "a.png", _img(40 if setup != "small_a" else 16, 40, 1))
    if setup == "empty_b":
        (tmp_path / "trainB").mkdir()
        (tmp_path / "trainB" / "notes.txt").write_text("no images here")
    elif setup != "no_b":
        _save(tmp_path / "trainB" / "b.png", _img(40, 40, 1))
    with pytest.raises(GanserveError, match=message):
        load_unpaired_folder(tmp_path if setup != "missing" else tmp_path / "nowhere", 32)
    with pytest.raises(GanserveError, match="domain B has no images"):
        UnpairedSource([_img(40, 40, 1)], [], 32)
