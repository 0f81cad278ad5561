"""UTKFace-named folders: the name parser (good and bad names) and the loader's skip counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganserve.core.errors import GanserveError
from ganserve.training.data.faces import UTKName, load_utkface_folder, parse_utkface_name
from utkface_files import write_utkface_folder


@pytest.mark.parametrize("name,expected", [
    ("25_0_1_20170116174525125.jpg", UTKName(25, 0, 1, "20170116174525125")),
    ("1_1_4_20161221193213366.jpg.chip.jpg", UTKName(1, 1, 4, "20161221193213366")),
    ("sub/dir/116_0_0_1.JPG", UTKName(116, 0, 0, "1")),
    ("60_1_3_7.png", UTKName(60, 1, 3, "7")),
])
def test_parses_utkface_names(name: str, expected: UTKName) -> None:
    assert parse_utkface_name(name) == expected


@pytest.mark.parametrize("name", [
    "25_0_1.jpg",  # no stamp
    "x25_0_1_2017.jpg", "abc_0_1_2017.jpg",  # age not a number
    "25_2_1_2017.jpg",  # gender is 0 or 1
    "25_0_5_2017.jpg",  # race is 0..4
    "117_0_1_2017.jpg", "1000_0_1_2017.jpg",  # older than anyone in the set
    "25_0_1_2017.txt", "25_0_1_2017", "25_0_1_2017.jpg.bak", "",
])
def test_rejects_bad_names(name: str) -> None:
    assert parse_utkface_name(name) is None


def test_loads_a_folder_and_counts_what_it_skips(tmp_path: Path) -> None:
    written = write_utkface_folder(tmp_path / "faces" / "a", "train", 6, seed=3)
    write_utkface_folder(tmp_path / "faces" / "b", "held_out", 3, seed=4, size=128)
    (tmp_path / "faces" / "a" / "not_a_face.jpg").write_bytes(b"\xff\xd8 junk")  # misnamed (and undecodable)
    (tmp_path / "faces" / "a" / "33_1_2_999.jpg").write_bytes(b"not a jpeg")  # good name, undecodable
    Image.new("RGB", (80, 60), (10, 20, 30)).save(tmp_path / "faces" / "b" / "45_0_0_5.jpg")  # non-square
    folder = load_utkface_folder(tmp_path / "faces", size=64)
    assert (folder.files, folder.misnamed, folder.undecodable) == (12, 1, 1)
    assert folder.images.shape == (10, 64, 64, 3) and folder.images.dtype == np.uint8
    written += sorted((tmp_path / "faces" / "b").glob("*_*_*_2017*.jpg"))
    ages = sorted([float(parse_utkface_name(p.name).age) for p in written] + [45.0])  # type: ignore[union-attr]
    assert sorted(folder.ages.tolist()) == ages
    facts = folder.facts()
    assert facts["images"] == 10 and sum(facts["per_group"]) == 10  # type: ignore[arg-type]
    # pixels arrive as saved (64x64 files are not resampled): some loaded image equals the first file
    first = np.asarray(Image.open(written[0]).convert("RGB")).astype(int)
    assert min(np.abs(img.astype(int) - first).max() for img in folder.images) == 0


def test_empty_or_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "junk.jpg").write_bytes(b"x")
    with pytest.raises(GanserveError, match="no usable UTKFace-named images"):
        load_utkface_folder(tmp_path)
    with pytest.raises(GanserveError, match="no such directory"):
        load_utkface_folder(tmp_path / "missing")
