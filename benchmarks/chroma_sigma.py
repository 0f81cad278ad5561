"""Choose a colouriser's chroma low-pass (pix2pix chroma_sigma) on TRAINING photos, never on held-out ones.

    python -m ganserve.benchmarks.chroma_sigma runs/pix2pix/checkpoint.pt [--sigmas 0 1 2 3 4] \
        [--out benchmarks/results/translation/chroma_sigma.json]

For each sigma: RGB PSNR / SSIM against the photo, and colourfulness, of the checkpoint's keep_luma colouriser with
that low-pass, on the centre crops (512 pixels at most, cut to the model's multiple) of the built-in training
photos that are in colour, next to the grey input. Picks the sigma with the best mean SSIM (PSNR breaks ties);
prints the table with the CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ganserve.benchmarks.peaks import describe
from ganserve.training.applications import translation_eval as te
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.data.images import BUILTIN_TRAIN, is_grey, load_builtin
from ganserve.training.data.paired import grey_map
from ganserve.training.networks.translation import Translator


def training_pairs(multiple: int, side: int = 512) -> list[tuple[np.ndarray, np.ndarray]]:
    """(grey, photo) uint8 of the colour training photos, centre-cropped to ``side`` and the model's multiple."""
    out = []
    for entry in BUILTIN_TRAIN:
        photo = load_builtin(entry)
        if is_grey(photo):
            continue
        h, w = photo.shape[:2]
        top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
        crop = te.center_crop_multiple(photo[top:top + side, left:left + side], multiple)
        out.append((grey_map(crop), crop))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0, 4.0])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    app = build_from_checkpoint(args.checkpoint)
    if not app.config.keep_luma:
        raise SystemExit(f"chroma_sigma: {args.checkpoint} is not a keep_luma colouriser")
    app.eval()
    pairs = training_pairs(app.multiple)
    rows = []
    for sigma in args.sigmas:
        module = Translator(app.generator, True, True, sigma).eval()
        figures = []
        for grey, photo in pairs:
            with torch.inference_mode():
                pred = te.to_hwc(module(torch.from_numpy(te.to_batch(grey))).numpy())
            truth = te.to_hwc(te.to_batch(photo))
            figures.append({**te.image_figures(pred, truth), "colourfulness": te.colourfulness(pred),
                            **{f"grey_{k}": v for k, v in te.image_figures(te.to_hwc(te.to_batch(grey)), truth).items()}})
        mean = te.mean_figures(figures)
        rows.append({"sigma": sigma, **{k: mean[k] for k in ("psnr", "ssim", "colourfulness", "grey_psnr", "grey_ssim")}})
    best = max(rows, key=lambda r: (round(r["ssim"], 4), r["psnr"]))
    cpu = describe()
    lines = [f"chroma_sigma on {len(pairs)} training photos (centre crops), {args.checkpoint}; CPU: {cpu}", "",
             "| sigma | PSNR | SSIM | colourfulness | grey input PSNR | grey input SSIM |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['sigma']:g} | {r['psnr']:.3f} | {r['ssim']:.4f} | {r['colourfulness']:.1f} | {r['grey_psnr']:.3f} | "
              f"{r['grey_ssim']:.4f} |" for r in rows]
    lines += ["", f"chosen: chroma_sigma {best['sigma']:g}"]
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "cpu": cpu, "photos": len(pairs),
                                        "rows": rows, "chosen": best["sigma"]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
