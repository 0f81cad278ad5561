"""Image codec benchmark: PNG/JPEG encode and decode time and size for every installed candidate library.

Content is realistic: a natural photo (scikit-image's astronaut) resized to each size, and a smooth SR-like output
(the same photo shrunk 4x and enlarged again by bicubic interpolation). PNG candidates are checked lossless
(decode(encode(x)) == x, bit-exact); JPEG candidates at quality 90 report their PSNR against the source. The
decoders are also timed on the same reference files (Pillow's PNG level 6 and JPEG q90, what clients send), and
the serving path itself (serving.imaging.encode_image / decode_image) is timed last, as the server runs it.

    python -m ganserve.benchmarks.codecs --sizes 256,512,1024 --repeats 5 --out benchmarks/results/codecs
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ganserve.benchmarks.cli import int_list
from ganserve.core.image_metrics import psnr
from ganserve.core.machine import cpu_info, describe

Encoder = Callable[[np.ndarray], bytes]
Decoder = Callable[[bytes], np.ndarray]


@dataclass
class Candidate:
    """One way to encode (and, where the library can, decode) one format."""

    name: str
    fmt: str  # "PNG" or "JPEG"
    library: str
    encode: Encoder | None = None
    decode: Decoder | None = None
    skip: str = ""  # why it is not measured (library not installed, ...)
    note: str = ""


@dataclass
class Results:
    """Everything one run measured, as written to JSON."""

    machine: dict = field(default_factory=dict)
    encoders: list[dict] = field(default_factory=list)
    decoders: list[dict] = field(default_factory=list)
    serving: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


# -- content ---------------------------------------------------------------------------------------------------
def photo(size: int) -> np.ndarray:
    """A natural photo (scikit-image's astronaut) resized to size x size, RGB uint8."""
    from skimage import data

    return np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS))


def sr_like(size: int) -> np.ndarray:
    """A smooth super-resolution-like output: the photo at size/4, enlarged 4x by bicubic interpolation."""
    small = Image.fromarray(photo(max(1, size // 4)))
    return np.asarray(small.resize((size, size), Image.Resampling.BICUBIC))


CONTENT: dict[str, Callable[[int], np.ndarray]] = {"photo": photo, "sr-output": sr_like}


# -- candidates ------------------------------------------------------------------------------------------------
def _pil_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img)


def _pil_png(level: int, compress_type: int = -1) -> Encoder:
    def encode(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG", compress_level=level, optimize=False, compress_type=compress_type)
        return buf.getvalue()
    return encode


def _pil_jpeg(quality: int) -> Encoder:
    def encode(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
    return encode


def pillow_candidates() -> list[Candidate]:
    """Pillow PNG at zlib levels 0/1/3/6 (optimize=False; Pillow has no PNG filter option, only zlib strategies)."""
    out = [Candidate(f"pillow-png-l{lv}", "PNG", "Pillow", _pil_png(lv), _pil_decode) for lv in (0, 1, 3, 6)]
    out.append(Candidate("pillow-png-l1-rle", "PNG", "Pillow", _pil_png(1, 3), _pil_decode, note="zlib Z_RLE"))
    out.append(Candidate("pillow-png-l1-filtered", "PNG", "Pillow", _pil_png(1, 1), _pil_decode,
                         note="zlib Z_FILTERED"))
    out.append(Candidate("pillow-jpeg-q90", "JPEG", "Pillow", _pil_jpeg(90), _pil_decode, note="4:2:0"))
    return out


def opencv_candidates() -> list[Candidate]:
    """OpenCV imencode/imdecode (libpng + zlib, libjpeg-turbo); RGB<->BGR conversion included in the time."""
    try:
        import cv2
    except ImportError as exc:
        return [Candidate("opencv-*", "PNG", "opencv-python-headless", skip=f"not installed ({exc})")]

    def png(level: int, strategy: int, png_filter: int | None = None) -> Encoder:
        params = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy]
        if png_filter is not None:
            params += [cv2.IMWRITE_PNG_FILTER, png_filter]

        def encode(arr: np.ndarray) -> bytes:
            bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
            ok, buf = cv2.imencode(".png", bgr, params)
            if not ok:
                raise RuntimeError("cv2.imencode failed")
            return buf.tobytes()
        return encode

    def jpeg(quality: int) -> Encoder:
        params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                  cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420]

        def encode(arr: np.ndarray) -> bytes:
            bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
            return cv2.imencode(".jpg", bgr, params)[1].tobytes()
        return encode

    def decode(data: bytes) -> np.ndarray:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError("cv2.imdecode failed")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img

    rle, default = cv2.IMWRITE_PNG_STRATEGY_RLE, cv2.IMWRITE_PNG_STRATEGY_DEFAULT
    out = [Candidate(f"opencv-png-l{lv}", "PNG", "opencv", png(lv, default), decode) for lv in (0, 1, 3, 6)]
    out.append(Candidate("opencv-png-l1-rle", "PNG", "opencv", png(1, rle), decode, note="Z_RLE (OpenCV's fast mode)"))
    out.append(Candidate("opencv-png-l1-rle-sub", "PNG", "opencv", png(1, rle, cv2.IMWRITE_PNG_FILTER_SUB), decode,
                         note="Z_RLE + SUB filter"))
    out.append(Candidate("opencv-png-l1-paeth", "PNG", "opencv", png(1, default, cv2.IMWRITE_PNG_FILTER_PAETH),
                         decode, note="PAETH filter"))
    out.append(Candidate("opencv-jpeg-q90", "JPEG", "opencv", jpeg(90), decode, note="4:2:0"))
    return out


def simplejpeg_candidates() -> list[Candidate]:
    """simplejpeg (libjpeg-turbo's TurboJPEG API) at q90, 4:2:0 like Pillow."""
    try:
        import simplejpeg
    except ImportError as exc:
        return [Candidate("simplejpeg-*", "JPEG", "simplejpeg", skip=f"not installed ({exc})")]

    def encode(arr: np.ndarray) -> bytes:
        if arr.ndim == 2:
            return simplejpeg.encode_jpeg(arr[..., None], 90, colorspace="GRAY", colorsubsampling="Gray")
        return simplejpeg.encode_jpeg(arr, 90, colorspace="RGB", colorsubsampling="420")

    def encode_fast(arr: np.ndarray) -> bytes:
        return simplejpeg.encode_jpeg(arr, 90, colorspace="RGB", colorsubsampling="420", fastdct=True)

    def decode(data: bytes) -> np.ndarray:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)

    def decode_fast(data: bytes) -> np.ndarray:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=True, fastupsample=True)

    return [Candidate("simplejpeg-q90", "JPEG", "simplejpeg", encode, decode, note="4:2:0, accurate DCT"),
            Candidate("simplejpeg-q90-fast", "JPEG", "simplejpeg", encode_fast, decode_fast,
                      note="4:2:0, fast DCT/upsampling")]


def imagecodecs_candidates() -> list[Candidate]:
    """imagecodecs: libpng (zlib-ng) and libspng PNG, libjpeg-turbo JPEG."""
    try:
        import imagecodecs as ic
    except ImportError as exc:
        return [Candidate("imagecodecs-*", "PNG", "imagecodecs", skip=f"not installed ({exc})")]

    def png(level: int, **kw) -> Encoder:
        return lambda arr: bytes(ic.png_encode(arr, level=level, **kw))

    out = [Candidate(f"imagecodecs-png-l{lv}", "PNG", "imagecodecs", png(lv), ic.png_decode) for lv in (1, 3, 6)]
    out.append(Candidate("imagecodecs-png-l1-rle-sub", "PNG", "imagecodecs",
                         png(1, strategy=ic.PNG.STRATEGY.RLE, filter=ic.PNG.FILTER.SUB), ic.png_decode,
                         note="Z_RLE + SUB filter"))
    out.append(Candidate("imagecodecs-spng-l1", "PNG", "imagecodecs",
                         lambda arr: bytes(ic.spng_encode(arr, level=1)), ic.spng_decode, note="libspng"))
    out.append(Candidate("imagecodecs-jpeg8-q90", "JPEG", "imagecodecs",
                         lambda arr: bytes(ic.jpeg8_encode(arr, level=90, subsampling="420")), ic.jpeg8_decode,
                         note="4:2:0"))
    return out


def fpng_candidates() -> list[Candidate]:
    """fpng (a PNG writer built for speed; RGB/RGBA only, its decoder only reads its own files)."""
    try:
        import fpng
    except ImportError as exc:
        return [Candidate("fpng", "PNG", "fpng", skip=f"not installed ({exc})")]

    def encode(arr: np.ndarray) -> bytes:
        if arr.ndim != 3:
            raise ValueError("fpng writes RGB/RGBA only")
        return fpng.from_ndarray(np.ascontiguousarray(arr))

    return [Candidate("fpng", "PNG", "fpng", encode, _pil_decode, note="decoded by Pillow")]


def decoder_only_candidates() -> list[Candidate]:
    """Decoders without a matching encoder row: pyspng (libspng)."""
    try:
        import pyspng
    except ImportError as exc:
        return [Candidate("pyspng", "PNG", "pyspng", skip=f"not installed ({exc})")]
    return [Candidate("pyspng", "PNG", "pyspng", decode=pyspng.load)]


def all_candidates() -> list[Candidate]:
    """Every candidate this machine could have; the uninstalled ones carry a skip reason."""
    return (pillow_candidates() + opencv_candidates() + simplejpeg_candidates() + imagecodecs_candidates()
            + fpng_candidates() + decoder_only_candidates())


# -- measuring -------------------------------------------------------------------------------------------------
def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of fn() in ms over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _reference_files(arr: np.ndarray) -> dict[str, bytes]:
    return {"PNG": _pil_png(6)(arr), "JPEG": _pil_jpeg(90)(arr)}


def measure(sizes: list[int], repeats: int, log: Callable[[str], None] = print) -> Results:
    """Time every available candidate on every content kind and size."""
    res = Results(machine={**cpu_info(), "describe": describe()})
    cands = all_candidates()
    res.skipped = [{"name": c.name, "library": c.library, "reason": c.skip} for c in cands if c.skip]
    cands = [c for c in cands if not c.skip]
    for size in sizes:
        for content, make in CONTENT.items():
            src = make(size)
            refs = _reference_files(src)
            pil_jpeg_decoded = _pil_decode(refs["JPEG"])
            for c in (c for c in cands if c.encode is not None):
                data = c.encode(src)
                row = {"content": content, "size": size, "codec": c.name, "format": c.fmt, "library": c.library,
                       "note": c.note, "encode_ms": median_ms(lambda: c.encode(src), repeats), "bytes": len(data)}
                back = c.decode(data) if c.decode else _pil_decode(data)
                row["decode_ms"] = median_ms(lambda: c.decode(data), repeats) if c.decode else None
                if c.fmt == "PNG":
                    row["lossless"] = bool(np.array_equal(back, src) and np.array_equal(_pil_decode(data), src))
                else:
                    row["psnr_db"] = psnr(_pil_decode(data), src, data_range=255.0)
                res.encoders.append(row)
                log(f"  {content:9s} {size:5d} {c.name:28s} enc {row['encode_ms']:8.2f} ms  "
                    f"dec {row['decode_ms'] if row['decode_ms'] is not None else float('nan'):7.2f} ms  "
                    f"{row['bytes']:>9,d} B")
            for c in (c for c in cands if c.decode is not None):
                data = refs[c.fmt]
                back = c.decode(data)
                row = {"content": content, "size": size, "decoder": c.name, "format": c.fmt, "library": c.library,
                       "input": "Pillow PNG level 6" if c.fmt == "PNG" else "Pillow JPEG q90",
                       "decode_ms": median_ms(lambda: c.decode(data), repeats)}
                if c.fmt == "PNG":
                    row["exact"] = bool(np.array_equal(back, src))
                else:
                    row["max_abs_diff_vs_pillow"] = int(np.abs(back.astype(int) - pil_jpeg_decoded.astype(int)).max())
                res.decoders.append(row)
            res.serving.extend(_serving_rows(content, size, src, refs, repeats))
    return res


def _serving_rows(content: str, size: int, src: np.ndarray, refs: dict[str, bytes], repeats: int) -> list[dict]:
    """The server's own path: encode_image from a PIL image, decode_image from bytes (whichever backend it picked)."""
    from ganserve.serving import imaging

    img = Image.fromarray(src)
    backend = getattr(imaging, "backend_names", lambda: {"PNG": "Pillow", "JPEG": "Pillow"})()
    rows = []
    for fmt in ("PNG", "JPEG"):
        data = imaging.encode_image(img, fmt)
        rows.append({"content": content, "size": size, "format": fmt, "backend": backend,
                     "encode_ms": median_ms(lambda: imaging.encode_image(img, fmt), repeats), "bytes": len(data),
                     "decode_ms": median_ms(lambda: imaging.decode_image(refs[fmt], 1 << 30), repeats)})
    return rows


# -- report ----------------------------------------------------------------------------------------------------
def _f(v: object, digits: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,d}"
    return str(v)


def markdown(res: Results) -> str:
    """A Markdown report: encoders, decoders, the serving path, and what was skipped."""
    lines = [f"# Image codecs\n\nCPU: {res.machine.get('describe', '?')}\n",
             "## Encoders (decode = the same library on its own output)\n",
             "| content | size | codec | encode ms | decode ms | bytes | check | note |", "|---|---|---|---|---|---|---|---|"]
    for r in res.encoders:
        check = ("lossless" if r["lossless"] else "**NOT lossless**") if r["format"] == "PNG" else \
            f"PSNR {r['psnr_db']:.2f} dB"
        lines.append(f"| {r['content']} | {r['size']} | {r['codec']} | {_f(r['encode_ms'])} | {_f(r['decode_ms'])} | "
                     f"{_f(r['bytes'])} | {check} | {r['note']} |")
    lines += ["\n## Decoders on the same reference file\n", "| content | size | decoder | input | decode ms | check |",
              "|---|---|---|---|---|---|"]
    for r in res.decoders:
        check = ("exact" if r["exact"] else "**differs**") if r["format"] == "PNG" else \
            f"max |diff| vs Pillow {r['max_abs_diff_vs_pillow']}"
        lines.append(f"| {r['content']} | {r['size']} | {r['decoder']} | {r['input']} | {_f(r['decode_ms'])} | {check} |")
    lines += ["\n## serving.imaging (the server's path, from a PIL image / from bytes)\n",
              "| content | size | format | backend | encode ms | decode ms | bytes |", "|---|---|---|---|---|---|---|"]
    for r in res.serving:
        lines.append(f"| {r['content']} | {r['size']} | {r['format']} | {r['backend'][r['format']]} | "
                     f"{_f(r['encode_ms'])} | {_f(r['decode_ms'])} | {_f(r['bytes'])} |")
    if res.skipped:
        lines += ["\n## Skipped\n"] + [f"- {s['name']} ({s['library']}): {s['reason']}" for s in res.skipped]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write codecs.json and codecs.md under --out."""
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.codecs", description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int_list, default=[256, 512, 1024], help="comma-separated square sizes (pixels)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement (median reported)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/codecs"), help="folder for JSON + Markdown")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    print(f"CPU: {describe()}")
    res = measure(args.sizes, args.repeats)
    for s in res.skipped:
        print(f"skipped {s['name']}: {s['reason']}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "codecs.json").write_text(json.dumps(res.__dict__, indent=2, default=str))
    (args.out / "codecs.md").write_text(markdown(res))
    print(f"wrote {args.out / 'codecs.json'} and {args.out / 'codecs.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
