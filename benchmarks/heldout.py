"""Held-out quality through the server, on both photo sets: the headline pair and the evaluation set
(training/data/images.py: BUILTIN_HELD_OUT, BUILTIN_EVAL_SET), with the spread over images.

    python -m ganserve.benchmarks.heldout --repo model-repository --sr srresnet --colour pix2pix pix2pix-l1 \
        [--ensemble] --out benchmarks/results/heldout

Starts `ganserve serve` on REPO (127.0.0.1, free ports) and sends every photo through the image API (gRPC Transform)
as a client would: 8-bit PNG in, 8-bit PNG out.
- super-resolution (--sr): the photo downscaled x scale (antialiased bicubic, rounded to 8 bits) in; PSNR-Y / SSIM-Y
  (border = scale) of the reply against the photo, next to bicubic upscaling of the same 8-bit input; with
  --ensemble also the reply to ``ensemble: 8`` and both request latencies.
- colourisers (--colour): the photo's Rec. 601 luma in (centre-cropped to the model's multiple, as training's
  evaluation does); RGB PSNR / SSIM of the reply against the photo next to the grey input's, the largest difference
  between the reply's 8-bit luma and the input's in grey levels, colourfulness of the reply and of the photo.
Each model gets one untimed warm-up request first. Writes results.json and results.md (per image, and mean / sd /
min / max per set); prints the tables with the CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganserve.benchmarks.peaks import describe
from ganserve.core.contract import CARD_FILE, ModelCard
from ganserve.core.image_metrics import colourfulness, from_uint8, psnr_rgb, psnr_y, ssim_rgb, ssim_y, to_uint8
from ganserve.core.pictures import png_bytes
from ganserve.training.applications.translation_eval import center_crop_multiple, luma
from ganserve.training.data.images import EVAL_SETS, mod_crop, named_photos
from ganserve.training.data.paired import grey_map

SR_KEYS = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y", "psnr_gain_y", "ensemble_psnr_y",
           "ensemble_gain_y", "ms", "ensemble_ms")
COLOUR_KEYS = ("psnr", "ssim", "grey_psnr", "grey_ssim", "luma_levels_max", "colourfulness", "truth_colourfulness",
               "ms")


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _timed_transform(client, model: str, image: np.ndarray, options=None) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    reply = client.transform(model, png_bytes(image), options=options)
    return _decode(reply.image), (time.perf_counter() - t0) * 1e3


def sr_rows(client, card: ModelCard, which: str, ensemble: bool) -> list[dict[str, Any]]:
    """One row per photo of ``which`` set: the served model and bicubic on the same 8-bit LR input."""
    import torch

    from ganserve.serving.client import ImageOptions
    from ganserve.training.data.images import downscale, to_tensor, upscale_bicubic

    scale, rows = card.scale, []
    for entry, photo in named_photos(which):
        hr8 = mod_crop(photo, scale)
        lr8 = to_uint8(downscale(to_tensor(hr8), scale)[0].permute(1, 2, 0).numpy())
        bic = upscale_bicubic(torch.from_numpy(from_uint8(lr8).astype(np.float32).transpose(2, 0, 1)[None]), scale)
        bic8 = to_uint8(bic[0].permute(1, 2, 0).numpy())
        out, ms = _timed_transform(client, card.name, lr8)
        hr = from_uint8(hr8)
        row = {"image": entry, "size": f"{hr8.shape[1]}x{hr8.shape[0]}",
               "psnr_y": psnr_y(from_uint8(out), hr, scale), "ssim_y": ssim_y(from_uint8(out), hr, scale),
               "bicubic_psnr_y": psnr_y(from_uint8(bic8), hr, scale),
               "bicubic_ssim_y": ssim_y(from_uint8(bic8), hr, scale), "ms": ms}
        row["psnr_gain_y"] = row["psnr_y"] - row["bicubic_psnr_y"]
        if ensemble:
            ens, ens_ms = _timed_transform(client, card.name, lr8, ImageOptions(ensemble=8))
            row["ensemble_psnr_y"] = psnr_y(from_uint8(ens), hr, scale)
            row["ensemble_gain_y"] = row["ensemble_psnr_y"] - row["bicubic_psnr_y"]
            row["ensemble_ms"] = ens_ms
        rows.append(row)
    return rows


def colour_rows(client, card: ModelCard, which: str) -> list[dict[str, Any]]:
    """One row per colour photo of ``which`` set: the served colouriser and the grey input against the photo."""
    rows = []
    multiple = max(1, card.spatial_multiple)
    for entry, photo in named_photos(which, colour_only=True):
        truth8 = center_crop_multiple(photo, multiple)
        grey8 = grey_map(truth8)
        out8, ms = _timed_transform(client, card.name, grey8)
        out, truth, grey = from_uint8(out8), from_uint8(truth8), from_uint8(grey8)
        rows.append({"image": entry, "size": f"{truth8.shape[1]}x{truth8.shape[0]}",
                     "psnr": psnr_rgb(out, truth), "ssim": ssim_rgb(out, truth),
                     "grey_psnr": psnr_rgb(grey, truth), "grey_ssim": ssim_rgb(grey, truth),
                     # both are exact 8-bit pictures: their luma in grey levels, no further rounding
                     "luma_levels_max": float(np.max(np.abs(luma(out) - luma(grey)))) * 255.0,
                     "colourfulness": colourfulness(out), "truth_colourfulness": colourfulness(truth), "ms": ms})
    return rows


def warm_up(client, card: ModelCard, ensemble: bool) -> None:
    """One untimed request (and one with ensemble: 8) on a small picture, so the timed ones find the model loaded."""
    from ganserve.serving.client import ImageOptions

    side = 2 * max(1, card.spatial_multiple, 32)
    image = np.full((side, side, 3), 128, np.uint8)
    client.transform(card.name, png_bytes(image))
    if ensemble:
        client.transform(card.name, png_bytes(image), options=ImageOptions(ensemble=8))


def spread(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """mean / sd / min / max over images of each key present."""
    out = {}
    for k in keys:
        values = np.array([r[k] for r in rows if k in r], dtype=np.float64)
        if values.size:
            out[k] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if values.size > 1 else 0.0,
                      "min": float(values.min()), "max": float(values.max()), "n": int(values.size)}
    return out


def _cell(s: dict[str, float]) -> str:
    return f"{s['mean']:.3f} ± {s['sd']:.3f} ({s['min']:.3f} .. {s['max']:.3f})"


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Held-out quality through the server, both photo sets", "",
             f"CPU: {result['cpu']}. Command: `{result['command']}`.", "",
             "Each cell: mean ± sd over images (min .. max). `headline`: the two photos every earlier figure used; "
             "`eval`: the evaluation set (training/data/images.py BUILTIN_EVAL_SET; colour tasks use its colour "
             "crops only).", ""]
    for model, sets in result["models"].items():
        order = SR_KEYS if sets[next(iter(sets))]["kind"] == "super-resolution" else COLOUR_KEYS
        keys = [k for k in order if any(k in s["summary"] for s in sets.values())]
        lines += [f"## {model} ({sets[next(iter(sets))]['kind']})", "", "| figure | " + " | ".join(
            f"{w} (n={sets[w]['images']})" for w in sets) + " |", "|---|" + "---|" * len(sets)]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(_cell(sets[w]["summary"][k]) if k in sets[w]["summary"] else ""
                                                  for w in sets) + " |")
        lines += ["", "Per image:", ""]
        for w, s in sets.items():
            cols = [k for k in keys if k in s["rows"][0]]
            lines += [f"{w}:", "", "| image | size | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
            lines += ["| " + r["image"] + " | " + r["size"] + " | " + " | ".join(f"{r[k]:.3f}" for k in cols) + " |"
                      for r in s["rows"]]
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ganserve.serving.client import ImagesClient
    from ganserve.serving.server import start_subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="model repository to serve")
    parser.add_argument("--sr", nargs="*", default=[], help="super-resolution models in REPO")
    parser.add_argument("--colour", nargs="*", default=[], help="colourisers (grey -> colour) in REPO")
    parser.add_argument("--ensemble", action="store_true", help="also ask the SR models with ensemble: 8")
    parser.add_argument("--sets", nargs="+", default=list(EVAL_SETS), choices=EVAL_SETS)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heldout"))
    args = parser.parse_args(argv)
    cards = {}
    for name in [*args.sr, *args.colour]:
        path = args.repo / name / CARD_FILE
        if not path.is_file():
            print(f"heldout: no model {name!r} in {args.repo} ({path} missing)", file=sys.stderr)
            return 2
        cards[name] = ModelCard.load(path)
    cpu = describe()
    print(f"CPU: {cpu}", flush=True)
    proc, port, _, _ = start_subprocess(args.repo)
    result: dict[str, Any] = {"cpu": cpu, "command": "python -m ganserve.benchmarks.heldout " + " ".join(argv or sys.argv[1:]),
                              "models": {}}
    try:
        with ImagesClient(f"127.0.0.1:{port}", timeout=600) as client:
            for name in args.sr + args.colour:
                kind = "super-resolution" if name in args.sr else "colouriser"
                warm_up(client, cards[name], args.ensemble and kind == "super-resolution")
                result["models"][name] = {}
                for which in args.sets:
                    rows = (sr_rows(client, cards[name], which, args.ensemble) if kind == "super-resolution"
                            else colour_rows(client, cards[name], which))
                    keys = SR_KEYS if kind == "super-resolution" else COLOUR_KEYS
                    result["models"][name][which] = {"kind": kind, "images": len(rows), "rows": rows,
                                                     "summary": spread(rows, keys)}
                    print(f"{name} {which}: " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in
                                                         result["models"][name][which]["summary"].items()), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (args.out / "results.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
