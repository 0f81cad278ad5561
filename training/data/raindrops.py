"""Raindrop data: a seeded renderer of drops on a glass pane over natural photos, and rainy/clean user folders.

The renderer needs no network. Each drop is a small lens: it shows a displaced, upside-down, minified and
defocused view of the scene behind it, with a darker rim and a specular highlight, as drops on a pane in front
of a camera lens look. Every pair is a pure function of (image, seed), so training batches and the held-out set
are reproducible. The built-in split is the photos' split (``training/data/images.py``): drops on the held-out
photos are evaluation only.

User folders (``--data-dir``) hold pairs in either layout::

    data/N_rain.png + gt/N_clean.png     (the Attentive-GAN data set's naming)
    A/NAME.png + B/NAME.png              (A = rainy, B = clean)

and their mask is derived as the paper does: pixels where the rainy and clean images differ by more than a
threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ganserve.core.errors import GanserveError
from ganserve.training.data.images import BUILTIN_HELD_OUT, BUILTIN_TRAIN, IMAGE_SUFFIXES, load_builtin

# Pixels a drop's soft edge and defocus may change outside its binary mask (the "blur margin").
EDGE_MARGIN = 2
# Paper-style mask from a pair: summed |rainy - clean| over RGB above this many 8-bit levels marks a drop pixel.
MASK_THRESHOLD = 30.0


@dataclass(frozen=True)
class DropStyle:
    """The ranges drops are drawn from; defaults suit 64-128 px crops of the built-in photos."""

    radius: tuple[float, float] = (2.5, 9.0)  # pixels
    coverage: tuple[float, float] = (0.06, 0.30)  # fraction of the image the drops aim to cover
    aspect: tuple[float, float] = (0.75, 1.3)  # ellipse axis ratio
    wobble: float = 0.12  # amplitude of the low-frequency outline perturbation (relative radius)
    magnify: tuple[float, float] = (1.6, 3.0)  # how much wider a field the lens shows than its own size
    shift: tuple[float, float] = (0.5, 1.6)  # displacement of the seen region, in radii (mostly upward)
    blur: tuple[float, float] = (0.8, 2.0)  # Gaussian sigma of the defocused scene inside drops
    rim: tuple[float, float] = (0.25, 0.55)  # darkening at the outline
    highlight: tuple[float, float] = (0.25, 0.6)  # specular spot strength
    haze: tuple[float, float] = (0.05, 0.15)  # contrast lost inside the drop (water scatters light)


DEFAULT_STYLE = DropStyle()


@dataclass
class RainyPair:
    """One rendered or loaded example: float32 HxWx3 images in [0, 1] and a float32 HxW mask of 0/1."""

    rainy: np.ndarray
    clean: np.ndarray
    mask: np.ndarray


def _smoothstep(lo: float, hi: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def render_drops(clean: np.ndarray, seed: int, style: DropStyle = DEFAULT_STYLE) -> RainyPair:
    """Drops on ``clean`` (HxWx3 uint8 or float in [0, 1]) from ``seed``: (rainy, clean, binary drop mask)."""
    img = np.asarray(clean)
    img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else img.astype(np.float32)
    if img.ndim != 3 or img.shape[2] != 3 or min(img.shape[:2]) < 8:
        raise GanserveError(f"render_drops: need an HxWx3 image of at least 8x8, got {img.shape}")
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    coverage = rng.uniform(*style.coverage)
    mean_r = 0.5 * sum(style.radius)
    count = max(1, int(round(coverage * h * w / (math.pi * mean_r * mean_r))))
    alpha = np.zeros((h, w), np.float32)  # soft coverage of the drop layer
    mask = np.zeros((h, w), bool)
    layer = np.zeros((h, w, 3), np.float32)  # what the drops show, where alpha > 0
    sigma = rng.uniform(*style.blur)
    behind = ndimage.gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")
    for _ in range(count):
        _draw_drop(img, behind, rng, style, alpha, mask, layer)
    a = alpha[:, :, None]
    rainy = np.clip(img * (1.0 - a) + layer * a, 0.0, 1.0).astype(np.float32)
    return RainyPair(rainy, img, mask.astype(np.float32))


def _draw_drop(img: np.ndarray, behind: np.ndarray, rng: np.random.Generator, style: DropStyle,
               alpha: np.ndarray, mask: np.ndarray, layer: np.ndarray) -> None:
    """Render one drop into the coverage, mask and layer buffers (later drops cover earlier ones)."""
    h, w = alpha.shape
    r = rng.uniform(*style.radius)
    aspect = rng.uniform(*style.aspect)
    rx, ry = r * math.sqrt(aspect), r / math.sqrt(aspect)
    cy, cx = rng.uniform(-0.3 * r, h - 1 + 0.3 * r), rng.uniform(-0.3 * r, w - 1 + 0.3 * r)
    angle = rng.uniform(0.0, math.pi)
    harmonics = [(k, rng.uniform(0.0, style.wobble) / k, rng.uniform(0.0, 2 * math.pi)) for k in (2, 3, 4)]
    magnify = rng.uniform(*style.magnify)
    shift = rng.uniform(*style.shift) * r
    shift_angle = rng.normal(-math.pi / 2, 0.5)  # the lens mostly shows what lies above the drop
    rim, highlight, haze = rng.uniform(*style.rim), rng.uniform(*style.highlight), rng.uniform(*style.haze)
    tint = 1.0 + rng.uniform(-0.04, 0.04, size=3).astype(np.float32)

    reach = max(rx, ry) * (1.0 + style.wobble) + EDGE_MARGIN
    y0, y1 = max(0, int(math.floor(cy - reach))), min(h, int(math.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(math.floor(cx - reach))), min(w, int(math.ceil(cx + reach)) + 1)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    ca, sa = math.cos(angle), math.sin(angle)
    u, v = (dx * ca + dy * sa) / rx, (-dx * sa + dy * ca) / ry  # ellipse frame
    phi = np.arctan2(v, u)
    outline = 1.0 + sum(a * np.cos(k * phi + p) for k, a, p in harmonics)
    rho = np.sqrt(u * u + v * v) / outline  # 1 on the outline
    inside = rho <= 1.0
    if not inside.any():
        return
    edge = np.clip((1.0 - rho) * r + 0.5, 0.0, 1.0)  # about one pixel of anti-aliased edge
    # the lens: an inverted, minified view of the defocused scene around a displaced centre
    sy = cy + shift * math.sin(shift_angle) - dy * magnify
    sx = cx + shift * math.cos(shift_angle) - dx * magnify
    seen = np.stack(
        [ndimage.map_coordinates(behind[:, :, c], [sy, sx], order=1, mode="mirror") for c in range(3)], axis=-1
    )
    seen = seen * (1.0 - haze) + haze * seen.mean()
    shade = 1.0 - rim * _smoothstep(0.6, 1.0, rho)
    glint = highlight * np.exp(-(((u + 0.35) ** 2 + (v + 0.35) ** 2) / (2 * 0.12**2)))
    colour = np.clip(seen * tint * shade[..., None] + glint[..., None], 0.0, 1.0)
    sub_a = alpha[y0:y1, x0:x1]
    sub_l = layer[y0:y1, x0:x1]
    take = edge[..., None]
    sub_l[:] = sub_l * (1.0 - take) + colour * take
    np.maximum(sub_a, edge, out=sub_a)
    mask[y0:y1, x0:x1] |= inside


def derived_mask(rainy: np.ndarray, clean: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """The paper's mask for a given pair: 1 where the summed |rainy - clean| over RGB exceeds ``threshold`` (0-255)."""
    diff = np.abs(rainy.astype(np.float32) - clean.astype(np.float32)).sum(axis=2) * 255.0
    return (diff > threshold).astype(np.float32)


# -- user folders ---------------------------------------------------------------------------------------------
def _images_in(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def find_pairs(root: str | Path) -> list[tuple[Path, Path]]:
    """(rainy, clean) file pairs under ``root`` in the data/+gt/ or A/+B/ layout; any mismatch is a clear error."""
    root = Path(root)
    if not root.is_dir():
        raise GanserveError(f"rain data folder {root}: no such directory")
    if (root / "data").is_dir() and (root / "gt").is_dir():
        rainy, clean = _images_in(root / "data"), _images_in(root / "gt")
        keyed_rain = {_stem_key(n, "_rain", root / "data"): p for n, p in rainy.items()}
        keyed_clean = {_stem_key(n, "_clean", root / "gt"): p for n, p in clean.items()}
        where = "data/N_rain vs gt/N_clean"
    elif (root / "A").is_dir() and (root / "B").is_dir():
        keyed_rain = {Path(n).stem: p for n, p in _images_in(root / "A").items()}
        keyed_clean = {Path(n).stem: p for n, p in _images_in(root / "B").items()}
        where = "A/ vs B/"
    else:
        raise GanserveError(f"rain data folder {root}: expected data/ + gt/ (N_rain.png, N_clean.png) or A/ + B/")
    only_rain = sorted(set(keyed_rain) - set(keyed_clean))
    only_clean = sorted(set(keyed_clean) - set(keyed_rain))
    if only_rain or only_clean:
        raise GanserveError(
            f"rain data folder {root}: names do not pair up ({where}): "
            f"rainy without clean {only_rain[:3]}, clean without rainy {only_clean[:3]}"
        )
    if not keyed_rain:
        raise GanserveError(f"rain data folder {root}: no image pairs found ({where})")
    return [(keyed_rain[k], keyed_clean[k]) for k in sorted(keyed_rain)]


def _stem_key(name: str, suffix: str, folder: Path) -> str:
    stem = Path(name).stem
    if not stem.endswith(suffix):
        raise GanserveError(f"{folder / name}: expected a name like N{suffix}{Path(name).suffix}")
    return stem[: -len(suffix)]


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise GanserveError(f"{path}: not a readable image ({type(exc).__name__})") from exc


def load_pairs(root: str | Path, min_size: int = 8, threshold: float = MASK_THRESHOLD) -> list[RainyPair]:
    """Every pair of a user folder, decoded, with its derived mask; unreadable files or size mismatches refused."""
    pairs = []
    for rain_path, clean_path in find_pairs(root):
        rainy, clean = _read_rgb(rain_path), _read_rgb(clean_path)
        if rainy.shape != clean.shape:
            raise GanserveError(
                f"{rain_path.name} is {rainy.shape[1]}x{rainy.shape[0]} but {clean_path.name} is "
                f"{clean.shape[1]}x{clean.shape[0]}: a rainy image and its clean image must have one size"
            )
        if min(rainy.shape[:2]) < min_size:
            raise GanserveError(f"{rain_path}: {rainy.shape[1]}x{rainy.shape[0]} is smaller than the {min_size}px crop")
        r, c = rainy.astype(np.float32) / 255.0, clean.astype(np.float32) / 255.0
        pairs.append(RainyPair(r, c, derived_mask(r, c, threshold)))
    return pairs


# -- training batches and the held-out set ------------------------------------------------------------------
def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=generator))


def _augment(arrays: list[np.ndarray], flips: list[int]) -> list[np.ndarray]:
    out = []
    for a in arrays:
        if flips[0]:
            a = a[:, ::-1]
        if flips[1]:
            a = a[::-1, :]
        if flips[2]:
            a = a.swapaxes(0, 1)
        out.append(np.ascontiguousarray(a))
    return out


def stack_pairs(pairs: list[RainyPair]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rainy, clean, mask) NCHW float32 tensors from a list of pairs of one size."""
    rainy = torch.from_numpy(np.stack([p.rainy for p in pairs])).permute(0, 3, 1, 2).contiguous()
    clean = torch.from_numpy(np.stack([p.clean for p in pairs])).permute(0, 3, 1, 2).contiguous()
    mask = torch.from_numpy(np.stack([p.mask for p in pairs]))[:, None].contiguous()
    return rainy, clean, mask


class RainSource:
    """Training crops: drops rendered on random crops of clean photos, or random crops of user pairs."""

    def __init__(self, patch: int, images: list[np.ndarray] | None = None, pairs: list[RainyPair] | None = None,
                 style: DropStyle = DEFAULT_STYLE) -> None:
        if (images is None) == (pairs is None):
            raise ValueError("give clean images to render on, or rainy/clean pairs, not both")
        self.patch, self.images, self.pairs, self.style = patch, images, pairs, style
        sizes = [im.shape[:2] for im in images] if images is not None else [p.clean.shape[:2] for p in pairs or []]
        small = [i for i, s in enumerate(sizes) if min(s) < patch]
        if small:
            raise GanserveError(f"images {small} are smaller than the {patch}px crop")

    @classmethod
    def from_config(cls, data_dir: str, patch: int) -> tuple["RainSource", dict]:
        """Rendered drops on the built-in training photos, or the pairs of a user folder; with facts for the log."""
        if data_dir:
            pairs = load_pairs(data_dir, min_size=patch)
            return cls(patch, pairs=pairs), {"source": f"folder {data_dir}", "pairs": len(pairs),
                                             "mask": f"derived: summed |rainy - clean| > {MASK_THRESHOLD:g}/255"}
        images = [load_builtin(e) for e in BUILTIN_TRAIN]
        facts = {"source": "builtin photos with rendered raindrops", "train": list(BUILTIN_TRAIN),
                 "held_out": list(BUILTIN_HELD_OUT), "mask": "rendered drop geometry"}
        return cls(patch, images=images), facts

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rainy, clean, mask) NCHW float32 batches; all randomness comes from ``generator``."""
        p = self.patch
        count = len(self.images) if self.images is not None else len(self.pairs or [])
        out = []
        for _ in range(size):
            k = int(torch.randint(count, (1,), generator=generator))
            src = self.images[k] if self.images is not None else self.pairs[k].clean  # type: ignore[index]
            h, w = src.shape[:2]
            y = int(torch.randint(h - p + 1, (1,), generator=generator))
            x = int(torch.randint(w - p + 1, (1,), generator=generator))
            flips = torch.randint(2, (3,), generator=generator).tolist()
            if self.images is not None:
                (crop,) = _augment([self.images[k][y : y + p, x : x + p]], flips)
                out.append(render_drops(crop, _seed_from(generator), self.style))
            else:
                pair = self.pairs[k]  # type: ignore[index]
                r, c, m = _augment([a[y : y + p, x : x + p] for a in (pair.rainy, pair.clean, pair.mask)], flips)
                out.append(RainyPair(r, c, m))
        return stack_pairs(out)


# Held-out evaluation set: fixed crops of the held-out photos with drops from fixed seeds.
HELD_OUT_CROP = 128
HELD_OUT_COUNT = 8


def held_out_pairs(count: int = HELD_OUT_COUNT, size: int = HELD_OUT_CROP) -> list[RainyPair]:
    """``count`` rendered pairs on ``size``-px crops spread over the held-out photos (never trained on)."""
    photos = [load_builtin(e) for e in BUILTIN_HELD_OUT]
    pairs = []
    for i in range(count):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        rng = np.random.default_rng([7, i])
        y, x = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        pairs.append(render_drops(img[y : y + size, x : x + size], seed=10_000 + i))
    return pairs
