"""Labelled digit images for the semi-supervised classifier: scikit-learn's bundled digits or MNIST IDX files.

Images are (N, 1, H, W) float32 in [0, 1] with ink bright on a dark background (as both sources store them).
Splits are stratified and seeded, so a split is the same on every machine and every run with the same seed:
a fixed held-out test split, an optional validation split carved from the training pool (for tuning), and the
labelled subset of N images per class; the rest of the training pool is the unlabelled set.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ganserve.core.errors import GanserveError

# IDX type codes (LeCun's MNIST format): the third byte of the magic number.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class DigitSet:
    """Images (N, 1, H, W) float32 in [0, 1], integer labels (N,), and where they came from."""

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[1] != 1:
            raise GanserveError(f"{self.source}: images must be (N, 1, H, W), got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise GanserveError(f"{self.source}: {len(self.images)} images but {len(self.labels)} labels")

    def take(self, index: np.ndarray) -> "DigitSet":
        """The subset at ``index`` (same source)."""
        return DigitSet(self.images[index], self.labels[index], self.source)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def load_sklearn_digits() -> DigitSet:
    """scikit-learn's bundled handwritten digits: 1,797 images of 8x8, values 0..16 scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images.astype(np.float32) / 16.0)[:, None]
    return DigitSet(np.ascontiguousarray(images), d.target.astype(np.int64), "sklearn:digits")


# -- MNIST IDX files ---------------------------------------------------------------------------------------
def read_idx(path: str | Path) -> np.ndarray:
    """One IDX file (optionally .gz) as a numpy array of its stored type and shape; GanserveError if malformed."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise GanserveError(f"{path}: unreadable IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise GanserveError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise GanserveError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise GanserveError(f"{path}: IDX shape {list(dims)} needs {expected} data bytes, file has {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    """``stem`` or ``stem.gz`` in ``folder`` (also the common ``stem`` with '-idx' written as '.idx')."""
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_pair(images_path: Path, labels_path: Path) -> DigitSet:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise GanserveError(f"{images_path}: expected (N, H, W) images and (N,) labels, got {images.shape}, {labels.shape}")
    if len(images) != len(labels):
        raise GanserveError(f"{images_path}: {len(images)} images but {labels_path.name} has {len(labels)} labels")
    scale = 255.0 if images.dtype == np.uint8 else max(float(images.max()), 1.0)
    pixels = (images.astype(np.float32) / scale)[:, None]
    return DigitSet(np.ascontiguousarray(pixels), labels.astype(np.int64), f"idx:{images_path}")


def load_mnist_dir(folder: str | Path) -> tuple[DigitSet, DigitSet | None]:
    """(train, test) from a folder of MNIST-format IDX files; test is None when no t10k files are there."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanserveError(f"data_dir {folder}: no such folder")
    found = {key: _find(folder, stem) for key, stem in MNIST_FILES.items()}
    if found["train_images"] is None or found["train_labels"] is None:
        raise GanserveError(
            f"data_dir {folder}: needs {MNIST_FILES['train_images']} and {MNIST_FILES['train_labels']} (optionally .gz)"
        )
    train = _idx_pair(found["train_images"], found["train_labels"])
    test = None
    if found["test_images"] is not None and found["test_labels"] is not None:
        test = _idx_pair(found["test_images"], found["test_labels"])
        if test.shape != train.shape:
            raise GanserveError(f"data_dir {folder}: test images are {test.shape}, train images {train.shape}")
    return train, test


# -- splits ------------------------------------------------------------------------------------------------
def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) index arrays: ``fraction`` of every class held out (rounded), drawn with ``seed``."""
    if not 0.0 < fraction < 1.0:
        raise GanserveError(f"split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_held = int(round(fraction * len(members)))
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def labeled_subset(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of ``per_class`` images of every class, drawn with ``seed`` (sorted); an error if a class is short."""
    if per_class < 1:
        raise GanserveError(f"labels_per_class must be >= 1, got {per_class}")
    rng = np.random.default_rng(seed)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if len(members) < per_class:
            raise GanserveError(f"class {cls} has {len(members)} training images, fewer than labels_per_class={per_class}")
        chosen.append(rng.choice(members, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen))


@dataclass
class SemiSupervisedSplit:
    """Labelled, unlabelled and held-out (test or validation) parts of one data source."""

    labeled: DigitSet
    unlabeled: DigitSet
    held_out: DigitSet
    held_out_name: str  # "test" or "validation"
    classes: int

    def facts(self) -> dict[str, object]:
        """Counts and provenance, for the checkpoint metrics and the model card."""
        return {
            "source": self.labeled.source,
            "image_shape": list(self.labeled.shape),
            "classes": self.classes,
            "labeled": len(self.labeled.labels),
            "unlabeled": len(self.unlabeled.labels),
            "held_out": self.held_out_name,
            "held_out_images": len(self.held_out.labels),
        }


def semi_supervised_split(
    data_dir: str, per_class: int, seed: int, holdout: str = "test", test_fraction: float = 0.3,
    validation_fraction: float = 0.2, split_seed: int = 0,
) -> SemiSupervisedSplit:
    """Split a source for semi-supervised training.

    The test split is fixed (``split_seed``; MNIST's own t10k files when present). With ``holdout="validation"``
    a stratified validation split is carved from the training pool and removed from training, so tuning never
    sees the test images. The labelled subset (``per_class`` of each class, drawn with ``seed``) comes from
    what remains; every other remaining training image is unlabelled.
    """
    if holdout not in ("test", "validation"):
        raise GanserveError(f"holdout must be 'test' or 'validation', got {holdout!r}")
    if data_dir:
        pool, test = load_mnist_dir(data_dir)
    else:
        pool, test = load_sklearn_digits(), None
    if test is None:
        keep, held = stratified_split(pool.labels, test_fraction, split_seed)
        pool, test = pool.take(keep), pool.take(held)
    held_out, name = test, "test"
    if holdout == "validation":
        keep, held = stratified_split(pool.labels, validation_fraction, split_seed + 1)
        pool, held_out, name = pool.take(keep), pool.take(held), "validation"
    lab = labeled_subset(pool.labels, per_class, seed)
    unl = np.setdiff1d(np.arange(len(pool.labels)), lab)
    if len(unl) == 0:
        raise GanserveError(f"labels_per_class={per_class} labels every training image; nothing is left unlabelled")
    classes = int(max(pool.labels.max(), held_out.labels.max())) + 1
    return SemiSupervisedSplit(pool.take(lab), pool.take(unl), held_out, name, classes)
