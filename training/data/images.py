"""Natural-image sources for super-resolution: the offline sample photos or a user folder, cropped and degraded.

The built-in split is fixed so results are comparable and the held-out pixels never reach training:
``BUILTIN_TRAIN`` and ``BUILTIN_HELD_OUT`` below (each entry is ``package:image`` with an optional column range).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganserve.core.errors import GanserveError
from ganserve.core.image_metrics import to_uint8

log = logging.getLogger("ganserve.training")

# Training photos (scikit-image and scikit-learn samples that load offline). coffee is split by columns:
# its right half trains, its left half is held out.
BUILTIN_TRAIN: tuple[str, ...] = (
    "skimage:astronaut",
    "skimage:chelsea",
    "skimage:rocket",
    "skimage:hubble_deep_field",
    "skimage:immunohistochemistry",
    "skimage:retina",
    "skimage:colorwheel",
    "skimage:logo",
    "sklearn:china",
    "skimage:coffee[300:600]",
)
# Held-out photos: evaluation only, never cropped for training. They are the headline: every figure since the first
# model was measured on them, so they stay comparable.
BUILTIN_HELD_OUT: tuple[str, ...] = ("sklearn:flower", "skimage:coffee[0:300]")
# The evaluation set beside the headline (issue 41): sample photos that load offline and that no training source
# uses (training/data lists them all; tests/training/test_eval_set.py checks that none is a training photo). Crop
# rule: an entry is ``package:name[r0:r1,c0:c1]`` (rows, then columns, of the original) or the whole photo; the
# colour photos are cut into crops of about a quarter of a megapixel or less so one scene does not weigh more than
# the others in a mean over images. The grey photos count where the figure is on luma (super-resolution's PSNR-Y);
# a colour task uses the colour entries only (``eval_set(colour_only=True)``: 8 crops).
BUILTIN_EVAL_SET: tuple[str, ...] = (
    # colour: Matplotlib's sample portrait (512x600) in two halves, the left view of scikit-image's stereo pair
    # (741x500) in six
    "matplotlib:grace_hopper[0:300,0:512]",
    "matplotlib:grace_hopper[300:600,0:512]",
    "skimage:motorcycle_left[0:250,0:247]",
    "skimage:motorcycle_left[0:250,247:494]",
    "skimage:motorcycle_left[0:250,494:741]",
    "skimage:motorcycle_left[250:500,0:247]",
    "skimage:motorcycle_left[250:500,247:494]",
    "skimage:motorcycle_left[250:500,494:741]",
    # grey: scikit-image's grey photos
    "skimage:camera",
    "skimage:brick",
    "skimage:grass",
    "skimage:gravel",
    "skimage:moon",
    "skimage:clock",
    "skimage:coins",
    "skimage:cell",
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """HxWx{1,3,4} or HxW -> HxWx3 uint8; alpha is composited onto white."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = to_uint8(img if img.max() <= 1.0 else img / 255.0)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


@functools.lru_cache(maxsize=None)
def load_builtin(entry: str) -> np.ndarray:
    """One ``package:name[c0:c1]`` or ``package:name[r0:r1,c0:c1]`` entry of the built-in lists as HxWx3 uint8
    (cached, read-only)."""
    package, _, rest = entry.partition(":")
    name, _, box = rest.partition("[")
    if package == "skimage" and name == "motorcycle_left":
        import skimage.data

        img = skimage.data.stereo_motorcycle()[0]
    elif package == "skimage":
        import skimage.data

        img = getattr(skimage.data, name)()
    elif package == "matplotlib":
        from matplotlib import cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data(f"{name}.jpg")) as im:
            img = np.asarray(im.convert("RGB"))
    elif package == "sklearn":
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()
        names = [Path(f).stem for f in bunch.filenames]
        img = bunch.images[names.index(name)]
    else:
        raise GanserveError(f"unknown built-in image source {entry!r}")
    img = _to_rgb_uint8(img)
    if box:  # "[c0:c1]" (columns) or "[r0:r1,c0:c1]"
        ranges = [tuple(int(v) for v in part.split(":")) for part in box.rstrip("]").split(",")]
        rows, cols = ranges if len(ranges) == 2 else ((0, img.shape[0]), ranges[0])
        img = img[rows[0]:rows[1], cols[0]:cols[1]]
    img = np.ascontiguousarray(img)
    img.flags.writeable = False
    return img


@dataclass
class FolderScan:
    """What a user folder held: usable images and how many files were skipped, and why."""

    images: list[np.ndarray]
    undecodable: int
    too_small: int
    files: int


def scan_folder(folder: str | Path, min_size: int) -> FolderScan:
    """Decode every image under ``folder`` (recursive); skip and count undecodable or too-small files."""
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if not folder.is_dir():
        raise GanserveError(f"data folder {folder}: no such directory")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise GanserveError(f"data folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    images: list[np.ndarray] = []
    undecodable = too_small = 0
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
                arr = _to_rgb_uint8(np.asarray(im))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            undecodable += 1
            continue
        if min(arr.shape[:2]) < min_size:
            too_small += 1
            continue
        images.append(arr)
    if not images:
        raise GanserveError(
            f"data folder {folder}: none of {len(paths)} image files usable "
            f"({undecodable} undecodable, {too_small} smaller than {min_size}px)"
        )
    return FolderScan(images, undecodable, too_small, len(paths))


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR input: antialiased bicubic downscaling of an NCHW [0,1] batch by ``scale`` (H, W divisible by it)."""
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp_(0.0, 1.0)


def upscale_bicubic(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline: NCHW [0,1] upscaled by ``scale``, clamped."""
    h, w = lr.shape[-2:]
    return F.interpolate(lr, size=(h * scale, w * scale), mode="bicubic", align_corners=False).clamp_(0.0, 1.0)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def mod_crop(img: np.ndarray, multiple: int) -> np.ndarray:
    """Crop the bottom/right so H and W are multiples of ``multiple``."""
    h, w = img.shape[:2]
    return img[: h - h % multiple, : w - w % multiple]


class SRSource:
    """Random HR crops (with flips/transposes) and their bicubic LR versions, from in-memory uint8 photos."""

    def __init__(self, images: list[np.ndarray], scale: int, lr_patch: int, augment: bool = True) -> None:
        self.images = images
        self.scale = scale
        self.hr_patch = lr_patch * scale
        self.augment = augment
        small = [i for i, im in enumerate(images) if min(im.shape[:2]) < self.hr_patch]
        if small:
            raise GanserveError(f"images {small} are smaller than the {self.hr_patch}px HR crop")

    @classmethod
    def from_config(cls, data_dir: str, scale: int, lr_patch: int) -> tuple["SRSource", dict]:
        """The built-in training photos, or a user folder when ``data_dir`` is set; with facts for the log."""
        if data_dir:
            scan = scan_folder(data_dir, lr_patch * scale)
            facts = {
                "source": f"folder {data_dir}",
                "images": len(scan.images),
                "files": scan.files,
                "skipped_undecodable": scan.undecodable,
                "skipped_too_small": scan.too_small,
            }
            log.info(
                "data: %d images from %s (%d undecodable and %d too small skipped)",
                len(scan.images), data_dir, scan.undecodable, scan.too_small,
            )
            return cls(scan.images, scale, lr_patch), facts
        images = [load_builtin(e) for e in BUILTIN_TRAIN]
        facts = {"source": "builtin", "train": list(BUILTIN_TRAIN), "held_out": list(BUILTIN_HELD_OUT)}
        return cls(images, scale, lr_patch), facts

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(LR, HR) float32 NCHW batches in [0, 1]; all randomness comes from ``generator``."""
        p = self.hr_patch
        crops = []
        for _ in range(size):
            img = self.images[int(torch.randint(len(self.images), (1,), generator=generator))]
            h, w = img.shape[:2]
            y = int(torch.randint(h - p + 1, (1,), generator=generator))
            x = int(torch.randint(w - p + 1, (1,), generator=generator))
            crop = img[y : y + p, x : x + p]
            if self.augment:
                flips = torch.randint(2, (3,), generator=generator).tolist()
                if flips[0]:
                    crop = crop[:, ::-1]
                if flips[1]:
                    crop = crop[::-1, :]
                if flips[2]:
                    crop = crop.transpose(1, 0, 2)
            crops.append(np.ascontiguousarray(crop))
        hr = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
        return downscale(hr, self.scale), hr


def held_out_images(scale: int, which: str = "headline") -> list[np.ndarray]:
    """The photos of ``which`` set (EVAL_SETS: the headline held-out pair or the evaluation set) as HxWx3 uint8,
    cropped to multiples of ``scale``."""
    return [mod_crop(photo, scale) for _, photo in named_photos(which)]


def is_grey(img: np.ndarray) -> bool:
    """Whether an HxWx3 picture's three channels are equal (a grey photo)."""
    return bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


def eval_set(colour_only: bool = False) -> list[tuple[str, np.ndarray]]:
    """The evaluation set (``BUILTIN_EVAL_SET``) as (entry, HxWx3 uint8); ``colour_only`` drops the grey photos."""
    items = [(e, load_builtin(e)) for e in BUILTIN_EVAL_SET]
    return [(e, img) for e, img in items if not (colour_only and is_grey(img))]


# Which photos a figure is measured on: the headline pair, or the evaluation set.
EVAL_SETS = ("headline", "eval")


def named_photos(which: str, colour_only: bool = False) -> list[tuple[str, np.ndarray]]:
    """(entry, HxWx3 uint8) of ``which`` set (EVAL_SETS)."""
    if which == "headline":
        return [(e, load_builtin(e)) for e in BUILTIN_HELD_OUT]
    if which == "eval":
        return eval_set(colour_only)
    raise GanserveError(f"photo set must be one of {', '.join(EVAL_SETS)}, got {which!r}")


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The RNG for one step's batch on one rank: a pure function of (seed, step, rank), so resume is exact."""
    mixed = np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(mixed) & 0x7FFF_FFFF_FFFF_FFFF)
