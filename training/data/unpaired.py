"""Unpaired image data for CycleGAN: a built-in task whose true mapping is known, and trainA/trainB folders.

Built-in task: domain A is one set of built-in photos, domain B a disjoint set rendered with a fixed colour grading
(``dusk``: a tone curve that darkens the mid-tones and per-channel gains that warm the picture) that the model is not
told. Training never sees a pair; the held-out photos (``BUILTIN_HELD_OUT``) and their ``dusk`` renderings give
the true answer in both directions, so translation quality can be measured.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganserve.core.errors import GanserveError
from ganserve.core.image_metrics import to_uint8
from ganserve.training.data.images import BUILTIN_HELD_OUT, IMAGE_SUFFIXES, load_builtin, scan_folder

# Disjoint built-in domains (both drawn from the training photos; the held-out ones are never used for training).
DOMAIN_A: tuple[str, ...] = ("skimage:astronaut", "skimage:rocket", "sklearn:china", "skimage:immunohistochemistry",
                             "skimage:logo")
DOMAIN_B: tuple[str, ...] = ("skimage:chelsea", "skimage:coffee[300:600]", "skimage:colorwheel", "skimage:retina",
                             "skimage:hubble_deep_field")
DUSK_GAMMA = 1.5
DUSK_GAINS = (1.0, 0.8, 0.62)  # R, G, B: warmer and darker; gains <= 1 so the grading never clips (invertible)
TRANSFORM_DESCRIPTION = f"dusk grading: out = gains * in**{DUSK_GAMMA}, gains RGB {DUSK_GAINS} (in [0, 1])"


def dusk(img: np.ndarray) -> np.ndarray:
    """The hidden A -> B transform on float RGB in [0, 1] (HxWx3 or any shape whose last axis is RGB)."""
    return np.asarray(DUSK_GAINS, dtype=np.float64) * np.clip(img, 0.0, 1.0) ** DUSK_GAMMA


def undusk(img: np.ndarray) -> np.ndarray:
    """The exact inverse of ``dusk`` (the true B -> A mapping), clipped to [0, 1]."""
    return np.clip(np.clip(img, 0.0, None) / np.asarray(DUSK_GAINS, dtype=np.float64), 0.0, 1.0) ** (1.0 / DUSK_GAMMA)


def dusk_uint8(img: np.ndarray) -> np.ndarray:
    """``dusk`` of an HxWx3 uint8 image, as uint8."""
    return to_uint8(dusk(img.astype(np.float64) / 255.0))


def builtin_domains() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(domain A photos, domain B photos rendered with ``dusk``) as HxWx3 uint8."""
    return [load_builtin(e) for e in DOMAIN_A], [dusk_uint8(load_builtin(e)) for e in DOMAIN_B]


def held_out_a() -> list[np.ndarray]:
    """Held-out domain-A photos (evaluation only); their true B versions are ``dusk`` of them."""
    return [load_builtin(e) for e in BUILTIN_HELD_OUT]


def load_unpaired_folder(folder: str | Path, min_size: int) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Domain images from ``folder/trainA`` and ``folder/trainB``, with facts (counts, skipped files)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanserveError(f"unpaired data folder {folder}: no such directory")
    domains, facts = [], {"source": f"unpaired folder {folder}"}
    for name in ("trainA", "trainB"):
        sub = folder / name
        if not sub.is_dir():
            raise GanserveError(f"unpaired data folder {folder}: no {name}/ subfolder (need trainA/ and trainB/)")
        if not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in sub.rglob("*")):
            raise GanserveError(f"unpaired data: domain {name}/ in {folder} is empty (no {', '.join(IMAGE_SUFFIXES)} files)")
        scan = scan_folder(sub, min_size)
        domains.append(scan.images)
        facts[name] = {"images": len(scan.images), "skipped_undecodable": scan.undecodable,
                       "skipped_too_small": scan.too_small}
    return domains[0], domains[1], facts


class UnpairedSource:
    """Independent random crops (with flips) from each domain: no pairing between the A and B of a batch."""

    def __init__(self, domain_a: list[np.ndarray], domain_b: list[np.ndarray], crop: int) -> None:
        for label, images in (("A", domain_a), ("B", domain_b)):
            if not images:
                raise GanserveError(f"unpaired data: domain {label} has no images")
            small = [i for i, im in enumerate(images) if min(im.shape[:2]) < crop]
            if small:
                raise GanserveError(f"unpaired data: domain {label} images {small} are smaller than the {crop}px crop")
        self.domains, self.crop = (domain_a, domain_b), crop

    def _crops(self, images: list[np.ndarray], size: int, generator: torch.Generator) -> torch.Tensor:
        p = self.crop
        out = []
        for _ in range(size):
            img = images[int(torch.randint(len(images), (1,), generator=generator))]
            h, w = img.shape[:2]
            y = int(torch.randint(h - p + 1, (1,), generator=generator))
            x = int(torch.randint(w - p + 1, (1,), generator=generator))
            crop = img[y : y + p, x : x + p]
            if int(torch.randint(2, (1,), generator=generator)):
                crop = crop[:, ::-1]
            out.append(np.ascontiguousarray(crop))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) float32 NCHW batches in [0, 1], drawn independently; all randomness from ``generator``."""
        return self._crops(self.domains[0], size, generator), self._crops(self.domains[1], size, generator)
