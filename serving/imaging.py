"""Image bytes <-> network tensors, driven by the model card's TensorSpec (no per-model code).

Decoding checks the header's size against a pixel limit before any pixel is decoded, so a decompression bomb
costs nothing; pre-processing maps 8-bit RGB (or grey) to the tensor's layout and value range, pads to the
network's spatial multiple by reflection; post-processing crops back and maps the value range to 8 bits.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from ganserve.core.contract import TensorSpec
from ganserve.serving import status

try:  # fpng writes standard PNG 20-30x faster than zlib level 1, same size (benchmarks/codecs.py); RGB/RGBA only
    import fpng as _fpng
except ImportError:  # Pillow writes every PNG then
    _fpng = None

FORMATS = ("PNG", "JPEG")
DEFAULT_JPEG_QUALITY = 90
# Pillow's zlib level for the PNGs fpng cannot write (grey) or when fpng is missing: a 256x256 SR output encodes in
# 6.8 ms instead of 30.1 ms at Pillow's default 6, for 22% more bytes (README, fast CPU section).
PNG_COMPRESS_LEVEL = 1
# Module-level switch: False makes Pillow write every PNG (tests use it to check the fallback path).
FAST_PNG = _fpng is not None


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode PNG/JPEG bytes into a loaded PIL image; INVALID_ARGUMENT / RESOURCE_EXHAUSTED on bad input."""
    if not data:
        raise status.invalid("empty image: send PNG or JPEG bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except UnidentifiedImageError as exc:
        raise status.invalid("undecodable image: not a PNG or JPEG") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise status.too_large(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise status.invalid(f"undecodable image: {exc}") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise status.too_large(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise status.invalid(f"undecodable or truncated {img.format} image: {exc}") from exc
    return img


def channels_of(spec: TensorSpec) -> int:
    """Channel count of an image tensor (3 when the spec leaves it dynamic)."""
    axis = 0 if spec.layout.upper() == "NCHW" else -1
    c = spec.shape[axis] if spec.shape else -1
    return c if c > 0 else 3


def fixed_size(spec: TensorSpec) -> tuple[int, int] | None:
    """(H, W) when the tensor's spatial size is fixed (e.g. a classifier), else None."""
    if len(spec.shape) != 3:
        return None
    h, w = (spec.shape[1], spec.shape[2]) if spec.layout.upper() == "NCHW" else (spec.shape[0], spec.shape[1])
    return (h, w) if h > 0 and w > 0 else None


def to_tensor(img: Image.Image, spec: TensorSpec) -> np.ndarray:
    """8-bit image -> (1, C, H, W) float32 in the spec's value range (NCHW here; see `to_layout`)."""
    channels = channels_of(spec)
    if channels not in (1, 3):
        raise status.invalid(f"input {spec.name!r} has {channels} channels; the image API feeds 1 or 3")
    img = img.convert("RGB" if channels == 3 else "L")
    size = fixed_size(spec)
    if size is not None and img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    lo, hi = spec.value_range or (0.0, 1.0)
    return (arr * (hi - lo) + lo)[None].astype(np.float32)


def to_layout(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """(N, C, H, W) float32 -> the tensor's layout and dtype."""
    if spec.layout.upper() == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x.astype(spec.numpy_dtype, copy=False))


def from_layout(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A network output in its layout -> (N, C, H, W) float32."""
    y = y.astype(np.float32, copy=False)  # an fp32 output is used as it is (a copy of a 12 MB SR output costs ms)
    return y.transpose(0, 3, 1, 2) if spec.layout.upper() == "NHWC" else y


def pad_to_multiple(x: np.ndarray, multiple: int) -> np.ndarray:
    """Pad (1, C, H, W) at the bottom/right to multiples of `multiple` (reflect; edge where too small)."""
    h, w = x.shape[2], x.shape[3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


# Sizes per axis (input pixels) that image requests of tile-safe models pad up to (where no tile cuts the axis), so
# the runtime sees a few input shapes instead of one per picture size (shape-compiling providers keep a kernel set per
# shape); each rounds up to the model's spatial multiple. Past the last, sizes step by BUCKET_STEP. Worst case about
# +50% per axis (65 -> 96).
BUCKETS = (32, 48, 64, 96, 128, 192, 256, 384, 512)
BUCKET_STEP = 128


def bucket_size(length: int, multiple: int = 1, limit: int = 0) -> int:
    """The size an axis of `length` pixels pads up to: the first of BUCKETS (rounded up to `multiple`) that holds it,
    else the next multiple of BUCKET_STEP (rounded up likewise); at most `limit` (> 0, a multiple of `multiple`)
    when the axis fits it."""
    def up(n: int) -> int:
        return -(-n // multiple) * multiple

    size = next((up(b) for b in BUCKETS if up(b) >= length), up(-(-length // BUCKET_STEP) * BUCKET_STEP))
    if limit and up(length) <= limit:
        size = min(size, limit)
    return max(size, up(length))


def bucketed_shape(height: int, width: int, multiple: int, limit: int = 0) -> tuple[int, int]:
    """(H, W) that `pad_to_bucket` pads to: each axis to its bucket size, an axis longer than `limit` (> 0) only to
    the multiple."""
    def target(length: int) -> int:
        padded = -(-length // multiple) * multiple
        return padded if limit and padded > limit else bucket_size(length, multiple, limit)
    return target(height), target(width)


def pad_to_bucket(x: np.ndarray, multiple: int, limit: int = 0) -> np.ndarray:
    """Pad (1, C, H, W) at the bottom/right so each axis is its `bucket_size`; with `limit` (> 0, the tile), an axis
    longer than it pads only to the multiple, since tiles of `limit` cut it. Per axis: reflect, edge where too small."""
    pads = [(0, target - length) for target, length in zip(bucketed_shape(x.shape[2], x.shape[3], multiple, limit),
                                                            x.shape[2:])]
    modes = ["reflect" if pad < length else "edge" for (_, pad), length in zip(pads, x.shape[2:])]
    if pads[0][1] == 0 and pads[1][1] == 0:
        return x
    if modes[0] == modes[1] or 0 in (pads[0][1], pads[1][1]):
        mode = modes[0] if pads[0][1] else modes[1]
        return np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), mode=mode)
    x = np.pad(x, ((0, 0), (0, 0), pads[0], (0, 0)), mode=modes[0])
    return np.pad(x, ((0, 0), (0, 0), (0, 0), pads[1]), mode=modes[1])


def to_pixels(y: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """(1, C, H, W) float32 in the spec's value range -> 8-bit pixels, (H, W, 3) for RGB or (H, W) for grey.

    rint(clip((y - lo) / (hi - lo), 0, 1) * 255), computed with the first operation reading the CHW output and
    writing interleaved HWC, so no separate transpose-and-cast pass is needed (0.6 vs 1.4 ms for a 512x512 SR
    output). For a [0, 1] output, y - 0 and y / 1 are exact and clip(y, 0, 1) * 255 equals clip(y * 255, 0, 255)
    (scaling by 255 keeps the order and maps 0 and 1 to 0 and 255 exactly), so those bytes are the same too.
    """
    lo, hi = spec.value_range or (0.0, 1.0)
    channels = y.shape[1]
    if channels not in (1, 3):
        raise status.invalid(f"output {spec.name!r} has {channels} channels; the image API returns 1 or 3")
    hwc = y[0].transpose(1, 2, 0)
    if lo == 0.0 and hi == 1.0:
        arr = np.multiply(hwc, np.float32(255.0), dtype=np.float32)
        np.clip(arr, 0.0, 255.0, out=arr)
    else:
        arr = np.subtract(hwc, np.float32(lo), dtype=np.float32)
        np.divide(arr, np.float32(hi - lo), out=arr)
        np.clip(arr, 0.0, 1.0, out=arr)
        np.multiply(arr, np.float32(255.0), out=arr)
    np.rint(arr, out=arr)
    pixels = arr.astype(np.uint8)
    return pixels[:, :, 0] if channels == 1 else pixels


def encode_pixels(pixels: np.ndarray, fmt: str = "PNG", quality: int = 0) -> bytes:
    """PNG or JPEG bytes of 8-bit pixels from `to_pixels`; RGB PNGs go to fpng straight from the array (building a
    PIL image first costs 0.8 ms at 512x512, as much as fpng's whole encode)."""
    if fmt != "JPEG" and pixels.ndim == 3 and FAST_PNG and _fpng is not None:
        try:
            return _fpng.from_ndarray(np.ascontiguousarray(pixels))
        except (RuntimeError, ValueError, TypeError):
            pass  # Pillow writes it below
    return encode_image(Image.fromarray(pixels), fmt, quality)


def backend_names() -> dict[str, str]:
    """Which library writes each format with the current settings (for benchmarks and logs)."""
    png = "fpng (RGB), Pillow (grey)" if FAST_PNG and _fpng is not None else f"Pillow zlib level {PNG_COMPRESS_LEVEL}"
    return {"PNG": png, "JPEG": "Pillow"}


def _fast_png(img: Image.Image) -> bytes | None:
    """fpng's PNG of an 8-bit RGB image; None where fpng is off, missing or cannot write it."""
    if not FAST_PNG or _fpng is None or img.mode != "RGB":
        return None
    try:
        return _fpng.from_ndarray(np.asarray(img))
    except (RuntimeError, ValueError, TypeError):
        return None


def encode_image(img: Image.Image, fmt: str = "PNG", quality: int = 0) -> bytes:
    """PNG or JPEG bytes of an image."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        q = quality or DEFAULT_JPEG_QUALITY
        if not 1 <= q <= 100:
            raise status.invalid(f"jpeg_quality must be 1..100, got {q}")
        img.save(buf, format="JPEG", quality=q)
    else:
        fast = _fast_png(img)
        if fast is not None:
            return fast
        img.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()
