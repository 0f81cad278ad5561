"""Raindrop renderer (reproducible, mask = changed pixels), held-out split, and the rainy/clean folder loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from ganserve.core.errors import GanserveError
from ganserve.training.data.images import BUILTIN_HELD_OUT, BUILTIN_TRAIN, load_builtin
from ganserve.training.data.raindrops import (
    EDGE_MARGIN,
    MASK_THRESHOLD,
    RainSource,
    derived_mask,
    find_pairs,
    held_out_pairs,
    load_pairs,
    render_drops,
)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    return np.ascontiguousarray(load_builtin("skimage:astronaut")[80:208, 120:248])


def test_same_seed_same_pair_other_seed_other_pair(crop: np.ndarray) -> None:
    a, b, c = render_drops(crop, 5), render_drops(crop, 5), render_drops(crop, 6)
    assert np.array_equal(a.rainy, b.rainy) and np.array_equal(a.mask, b.mask)
    assert np.array_equal(a.clean, crop.astype(np.float32) / 255.0)
    assert not np.array_equal(a.mask, c.mask)
    assert a.rainy.dtype == np.float32 and a.rainy.shape == (128, 128, 3) and a.mask.shape == (128, 128)
    assert 0.0 <= a.rainy.min() and a.rainy.max() <= 1.0 and set(np.unique(a.mask)) == {0.0, 1.0}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mask_covers_exactly_the_changed_pixels(crop: np.ndarray, seed: int) -> None:
    pair = render_drops(crop, seed)
    changed = np.abs(pair.rainy - pair.clean).max(axis=2) > 0.5 / 255.0
    mask = pair.mask > 0
    margin = ndimage.binary_dilation(mask, iterations=EDGE_MARGIN)
    assert not (changed & ~margin).any(), "pixels changed outside the drops' blur margin"
    assert np.array_equal(pair.rainy[~margin], pair.clean[~margin])
    # inside a drop the refracted view differs from the scene it covers (a few pixels may match by chance)
    assert (changed & mask).sum() >= 0.97 * mask.sum() > 0


def test_drops_vary_in_size_shape_and_density(crop: np.ndarray) -> None:
    coverages, areas = [], []
    for seed in range(12):
        mask = render_drops(crop, seed).mask > 0
        coverages.append(mask.mean())
        labels, n = ndimage.label(mask)
        areas += list(np.bincount(labels.ravel())[1:])
    assert min(coverages) < 0.1 < 0.2 < max(coverages)
    assert min(areas) < 40 and max(areas) > 150  # radii 2.5..9 px, plus merged drops


def test_held_out_pairs_come_from_held_out_photos_only() -> None:
    pairs = held_out_pairs()
    assert len(pairs) == 8 and all(p.clean.shape == (128, 128, 3) for p in pairs)
    again = held_out_pairs()
    assert all(np.array_equal(p.rainy, q.rainy) for p, q in zip(pairs, again))
    photos = [load_builtin(e).astype(np.float32) / 255.0 for e in BUILTIN_HELD_OUT]
    for i, p in enumerate(pairs):
        photo = photos[i % len(photos)]
        ys, xs = np.nonzero(np.all(photo == p.clean[0, 0], axis=2))
        assert any(np.array_equal(photo[y : y + 128, x : x + 128], p.clean) for y, x in zip(ys, xs))
    source, facts = RainSource.from_config("", 64)
    assert facts["train"] == list(BUILTIN_TRAIN) and len(source.images or []) == len(BUILTIN_TRAIN)
    assert not set(BUILTIN_HELD_OUT) & set(BUILTIN_TRAIN)


def test_batches_are_a_function_of_the_generator() -> None:
    source, _ = RainSource.from_config("", 32)
    a = source.batch(3, torch.Generator().manual_seed(4))
    b = source.batch(3, torch.Generator().manual_seed(4))
    c = source.batch(3, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    rainy, clean, mask = a
    assert rainy.shape == clean.shape == (3, 3, 32, 32) and mask.shape == (3, 1, 32, 32)
    assert float(((rainy - clean).abs().amax(1, keepdim=True) > 0)[mask < 0.5].float().mean()) < 0.2


# -- user folders -------------------------------------------------------------------------------------------
def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _pair_arrays(seed: int, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 200, size=(h, w, 3), dtype=np.uint8)
    rainy = clean.copy()
    rainy[5:15, 10:20] += 50  # a "drop": summed difference 150 > threshold
    rainy[30:32, 0:4, 0] += 5  # noise: summed difference 5 < threshold, not a drop
    return rainy, clean


def test_folder_in_the_papers_layout(tmp_path: Path) -> None:
    for n in (1, 2):
        rainy, clean = _pair_arrays(n)
        _save(tmp_path / "data" / f"{n}_rain.png", rainy)
        _save(tmp_path / "gt" / f"{n}_clean.png", clean)
    found = find_pairs(tmp_path)
    assert [(r.name, c.name) for r, c in found] == [("1_rain.png", "1_clean.png"), ("2_rain.png", "2_clean.png")]
    pairs = load_pairs(tmp_path)
    expected = np.zeros((40, 48), np.float32)
    expected[5:15, 10:20] = 1.0
    assert all(np.array_equal(p.mask, expected) for p in pairs)
    assert np.allclose(pairs[0].rainy * 255.0, _pair_arrays(1)[0], atol=1e-3)
    source, facts = RainSource.from_config(str(tmp_path), 32)
    assert facts["pairs"] == 2
    rainy, clean, mask = source.batch(4, torch.Generator().manual_seed(0))
    changed = ((rainy - clean).abs().sum(1, keepdim=True) * 255.0 > MASK_THRESHOLD).float()
    assert torch.equal(changed, mask)  # crops and flips keep the three arrays aligned


def test_folder_with_a_and_b(tmp_path: Path) -> None:
    rainy, clean = _pair_arrays(3)
    _save(tmp_path / "A" / "x.png", rainy)
    _save(tmp_path / "B" / "x.png", clean)
    (pair,) = load_pairs(tmp_path)
    assert pair.mask.sum() == 100 and np.array_equal(pair.mask, derived_mask(pair.rainy, pair.clean))


def test_folder_refusals(tmp_path: Path) -> None:
    rainy, clean = _pair_arrays(4)
    with pytest.raises(GanserveError, match="no such directory"):
        find_pairs(tmp_path / "missing")
    with pytest.raises(GanserveError, match="expected data/ \\+ gt/"):
        find_pairs(tmp_path)
    _save(tmp_path / "m" / "data" / "1_rain.png", rainy)
    _save(tmp_path / "m" / "gt" / "2_clean.png", clean)
    with pytest.raises(GanserveError, match=r"do not pair up.*\['1'\].*\['2'\]"):
        find_pairs(tmp_path / "m")
    _save(tmp_path / "n" / "data" / "1.png", rainy)
    _save(tmp_path / "n" / "gt" / "1_clean.png", clean)
    with pytest.raises(GanserveError, match="expected a name like N_rain.png"):
        find_pairs(tmp_path / "n")
    _save(tmp_path / "s" / "A" / "1.png", rainy)
    _save(tmp_path / "s" / "B" / "1.png", clean[:, :40])
    with pytest.raises(GanserveError, match="must have one size"):
        load_pairs(tmp_path / "s")
    (tmp_path / "e" / "A").mkdir(parents=True)
    (tmp_path / "e" / "B").mkdir()
    with pytest.raises(GanserveError, match="no image pairs"):
        find_pairs(tmp_path / "e")
    _save(tmp_path / "u" / "A" / "1.png", rainy)
    (tmp_path / "u" / "B").mkdir()
    (tmp_path / "u" / "B" / "1.png").write_bytes(b"not a png")
    with pytest.raises(GanserveError, match="not a readable image"):
        load_pairs(tmp_path / "u")
    _save(tmp_path / "t" / "A" / "1.png", rainy)
    _save(tmp_path / "t" / "B" / "1.png", clean)
    with pytest.raises(GanserveError, match="smaller than the 64px crop"):
        load_pairs(tmp_path / "t", min_size=64)
