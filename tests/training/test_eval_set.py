"""The evaluation set beside the headline held-out photos: offline, disjoint from every training source, cut as its
crop rule says, and big enough (at least eight entries for luma figures and eight colour crops for colour tasks)."""

from __future__ import annotations

import numpy as np
import pytest

from ganserve.training.data.images import (BUILTIN_EVAL_SET, BUILTIN_HELD_OUT, BUILTIN_TRAIN, eval_set, is_grey,
                                           load_builtin, named_photos)
from ganserve.training.data.paired import held_out_pairs
from ganserve.training.data.unpaired import DOMAIN_A, DOMAIN_B


def _source(entry: str) -> str:
    """``package:name`` without its crop."""
    return entry.split("[")[0]


def test_no_training_source_uses_an_evaluation_photo():
    trained = {_source(e) for e in (*BUILTIN_TRAIN, *DOMAIN_A, *DOMAIN_B)}
    headline = {_source(e) for e in BUILTIN_HELD_OUT}
    used = {_source(e) for e in BUILTIN_EVAL_SET}
    assert not used & trained, used & trained
    assert not used & headline, used & headline
    # by pixels too: no evaluation picture is (a crop of) a training photo of the same size or a training photo
    train_shapes = {load_builtin(e).shape for e in BUILTIN_TRAIN}
    for entry, img in eval_set():
        if img.shape in train_shapes:
            assert not any(np.array_equal(img, load_builtin(t)) for t in BUILTIN_TRAIN), entry


def test_sizes_and_colour_split():
    items = eval_set()
    assert len(items) == len(BUILTIN_EVAL_SET) >= 8
    colour = eval_set(colour_only=True)
    assert len(colour) >= 8
    assert all(not is_grey(img) for _, img in colour)
    assert all(is_grey(img) for e, img in items if e not in dict(colour))
    for entry, img in items:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 192, entry  # every crop is big enough for pix2pix's 64-pixel multiple x 3


def test_crop_rule_rows_then_columns():
    whole = load_builtin("skimage:motorcycle_left")
    crop = load_builtin("skimage:motorcycle_left[250:500,247:494]")
    assert np.array_equal(crop, whole[250:500, 247:494])
    assert np.array_equal(load_builtin("skimage:coffee[0:300]"), load_builtin("skimage:coffee")[:, 0:300])
    # the crops of one photo tile it without overlap
    tiles = [img for e, img in eval_set() if e.startswith("skimage:motorcycle_left[")]
    assert sum(t.shape[0] * t.shape[1] for t in tiles) == 500 * 741


def test_named_sets_and_pairs():
    assert [e for e, _ in named_photos("headline")] == list(BUILTIN_HELD_OUT)
    pairs = held_out_pairs("colour", "eval")
    assert len(pairs) == len(eval_set(colour_only=True))
    grey, photo = pairs[0]
    assert is_grey(grey) and not is_grey(photo) and grey.shape == photo.shape
    with pytest.raises(Exception, match="photo set must be one of"):
        named_photos("everything")
