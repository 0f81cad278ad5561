"""Paired image data for pix2pix: two built-in tasks and user folders in the two usual layouts.

Built-in tasks (B is always the photo itself): ``colour`` -- A is the photo's grey version (Rec. 601 luma, three
equal channels), the paper's BW -> colour task; ``edges`` -- A is the photo's Canny edge map (black lines on white).
Training pairs come from ``BUILTIN_TRAIN``, held-out pairs from ``BUILTIN_HELD_OUT`` (never cropped for training).
Folders: ``DIR/A/`` and ``DIR/B/`` holding files with the same names, or ``DIR/`` holding side-by-side images
(A on the left half, B on the right), as pix2pix's data sets ship.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ganserve.core.errors import GanserveError
from ganserve.core.image_metrics import LUMA_WEIGHTS
from ganserve.training.data.images import BUILTIN_TRAIN, IMAGE_SUFFIXES, load_builtin, named_photos

Pair = tuple[np.ndarray, np.ndarray]  # (A, B) as HxWx3 uint8 of the same size
CANNY_SIGMA = 2.0


def edge_map(img: np.ndarray, sigma: float = CANNY_SIGMA) -> np.ndarray:
    """Canny edges of an HxWx3 uint8 photo as HxWx3 uint8: black (0) lines on white (255)."""
    from skimage.color import rgb2gray
    from skimage.feature import canny

    edges = canny(rgb2gray(img), sigma=sigma)
    out = np.where(edges, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(out[:, :, None], 3, axis=2))


def grey_map(img: np.ndarray) -> np.ndarray:
    """The Rec. 601 luma of an HxWx3 uint8 photo as HxWx3 uint8 (three equal channels, rounded)."""
    luma = img.astype(np.float64) @ np.asarray(LUMA_WEIGHTS)
    out = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.repeat(out[:, :, None], 3, axis=2))


# built-in task name -> how its input A is made from the photo B
BUILTIN_TASKS = {"colour": grey_map, "edges": edge_map}
TASK_DESCRIPTIONS = {"colour": "grey -> colour (Rec. 601 luma in, the photo out)",
                     "edges": f"edges -> photo (Canny edges, sigma {CANNY_SIGMA})"}


def check_task(task: str) -> str:
    if task not in BUILTIN_TASKS:
        raise GanserveError(f"pix2pix task must be one of {', '.join(BUILTIN_TASKS)}, got {task!r}")
    return task


@functools.lru_cache(maxsize=None)
def builtin_pair(entry: str, task: str = "edges") -> Pair:
    """(input, photo) of one built-in task for one built-in photo entry (cached)."""
    photo = load_builtin(entry)
    return BUILTIN_TASKS[check_task(task)](photo), photo


def builtin_train_pairs(task: str = "edges") -> list[Pair]:
    """The built-in task's pairs of the built-in training photos."""
    return [builtin_pair(e, task) for e in BUILTIN_TRAIN]


def held_out_pairs(task: str = "edges", which: str = "headline") -> list[Pair]:
    """The built-in task's pairs of the held-out photos (evaluation only): the headline pair, or the colour photos
    of the evaluation set (images.EVAL_SETS)."""
    return [builtin_pair(e, task) for e, _ in named_photos(which, colour_only=True)]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise GanserveError(f"{path}: not a decodable image") from exc


def _names(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")


def load_paired_folder(folder: str | Path, min_size: int) -> list[Pair]:
    """Pairs from ``folder/A`` + ``folder/B`` (same file names) or from side-by-side AB images in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanserveError(f"paired data folder {folder}: no such directory")
    a_dir, b_dir = folder / "A", folder / "B"
    if a_dir.is_dir() or b_dir.is_dir():
        if not (a_dir.is_dir() and b_dir.is_dir()):
            raise GanserveError(f"paired data folder {folder}: has {'A' if a_dir.is_dir() else 'B'}/ but not the other")
        pairs = _split_folders(a_dir, b_dir)
    else:
        pairs = _side_by_side(folder)
    small = [i for i, (a, _) in enumerate(pairs) if min(a.shape[:2]) < min_size]
    if small:
        raise GanserveError(f"paired data folder {folder}: {len(small)} pair(s) smaller than the {min_size}px crop")
    return pairs


def _split_folders(a_dir: Path, b_dir: Path) -> list[Pair]:
    a_files, b_files = _image_files(a_dir), _image_files(b_dir)
    if not a_files or not b_files:
        raise GanserveError(f"paired data: {a_dir if not a_files else b_dir} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    a_by, b_by = {p.stem: p for p in a_files}, {p.stem: p for p in b_files}
    only_a = [a_by[k] for k in sorted(set(a_by) - set(b_by))]
    only_b = [b_by[k] for k in sorted(set(b_by) - set(a_by))]
    if only_a or only_b:
        parts = [f"{len(only_a)} in A/ without a partner ({_names(only_a)})" if only_a else "",
                 f"{len(only_b)} in B/ without a partner ({_names(only_b)})" if only_b else ""]
        raise GanserveError(f"paired data: mismatched pair names: {'; '.join(p for p in parts if p)}")
    pairs = []
    for stem in sorted(a_by):
        a, b = _read(a_by[stem]), _read(b_by[stem])
        if a.shape != b.shape:
            raise GanserveError(f"paired data: {stem}: A is {a.shape[1]}x{a.shape[0]} but B is {b.shape[1]}x{b.shape[0]}")
        pairs.append((a, b))
    return pairs


def _side_by_side(folder: Path) -> list[Pair]:
    files = _image_files(folder)
    if not files:
        raise GanserveError(f"paired data folder {folder}: no A/ and B/ subfolders and no side-by-side images")
    pairs = []
    for path in files:
        ab = _read(path)
        w = ab.shape[1]
        if w % 2:
            raise GanserveError(f"paired data: {path.name} is {w} px wide; side-by-side AB images need an even width")
        pairs.append((np.ascontiguousarray(ab[:, : w // 2]), np.ascontiguousarray(ab[:, w // 2 :])))
    return pairs


class PairedSource:
    """Aligned random crops (with flips) of (A, B) pairs; the same window and flips for both images."""

    def __init__(self, pairs: list[Pair], crop: int, augment: bool = True) -> None:
        if not pairs:
            raise GanserveError("paired data: no pairs")
        small = [i for i, (a, _) in enumerate(pairs) if min(a.shape[:2]) < crop]
        if small:
            raise GanserveError(f"paired data: pairs {small} are smaller than the {crop}px crop")
        self.pairs, self.crop, self.augment = pairs, crop, augment

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) float32 NCHW batches in [0, 1]; all randomness comes from ``generator``."""
        p = self.crop
        a_crops, b_crops = [], []
        for _ in range(size):
            a, b = self.pairs[int(torch.randint(len(self.pairs), (1,), generator=generator))]
            h, w = a.shape[:2]
            y = int(torch.randint(h - p + 1, (1,), generator=generator))
            x = int(torch.randint(w - p + 1, (1,), generator=generator))
            ca, cb = a[y : y + p, x : x + p], b[y : y + p, x : x + p]
            if self.augment and int(torch.randint(2, (1,), generator=generator)):
                ca, cb = ca[:, ::-1], cb[:, ::-1]
            a_crops.append(np.ascontiguousarray(ca))
            b_crops.append(np.ascontiguousarray(cb))
        return _nchw(a_crops), _nchw(b_crops)


def _nchw(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def swap_direction(pairs: list[Pair], direction: str) -> list[Pair]:
    """Pairs as A->B (``"AtoB"``) or B->A (``"BtoA"``)."""
    if direction == "AtoB":
        return pairs
    if direction == "BtoA":
        return [(b, a) for a, b in pairs]
    raise GanserveError(f"direction must be AtoB or BtoA, got {direction!r}")
