"""Held-out translation quality: pix2pix vs the L1-only U-Net vs the identity mapping (edges -> photo), and CycleGAN
both ways vs the identity mapping and a colour-statistics transfer (hidden dusk grading).

    python -m ganserve.benchmarks.translation_quality --pix2pix runs/pix2pix/checkpoint.pt \
        --l1 runs/pix2pix-l1/checkpoint.pt --cyclegan runs/cyclegan/checkpoint.pt --out benchmarks/results/translation

Writes results.json, results.md, pix2pix.png (edges | L1-only | pix2pix | photo) and cyclegan.png (A | G_AB(A) |
true B | G_BA(true B) | A); prints the Markdown table with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganserve.benchmarks.machine import describe
from ganserve.core.image_metrics import to_uint8
from ganserve.core.pictures import labelled_row, stack, to_pil
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.data.unpaired import builtin_domains
from ganserve.training.models import translation_eval as te

FIGURES = ("l1", "psnr", "ssim", "sharpness")
DIRECTION_LABEL = {"ab": "A -> B", "ba": "B -> A"}


def _trained(ckpt: Path) -> dict[str, Any]:
    payload = load_checkpoint(ckpt)
    info = payload.get("metrics", {}) or {}
    return {"checkpoint": str(ckpt), "steps": payload["step"], "train_seconds": info.get("elapsed_seconds")}


def _load(ckpt: Path, model: str, l1_only: bool | None = None) -> Any:
    payload = load_checkpoint(ckpt)
    if payload["model"] != model:
        raise SystemExit(f"translation_quality: {ckpt} holds {payload['model']!r}, want {model!r}")
    app = build_from_checkpoint(ckpt)
    if l1_only is not None and (app.config.gan_weight == 0) != l1_only:
        raise SystemExit(f"translation_quality: {ckpt} is {'not ' if l1_only else ''}an L1-only (gan_weight=0) run")
    return app


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.clip(x[0].transpose(1, 2, 0), 0.0, 1.0)


def pix2pix_rows(gan: Any, l1: Any, gan_ckpt: Path, l1_ckpt: Path) -> list[dict[str, Any]]:
    """Identity, L1-only and pix2pix figures on the held-out edges -> photo pairs."""
    g, b = gan.evaluate(), l1.evaluate()
    return [
        {"method": "identity (edge map)", **{k: g[f"identity_{k}"] for k in FIGURES}},
        {"method": "L1-only U-Net", **{k: b[k] for k in FIGURES}, **_trained(l1_ckpt)},
        {"method": "pix2pix", **{k: g[k] for k in FIGURES}, **_trained(gan_ckpt)},
    ]


def colour_transfer(domain_a: list[np.ndarray], domain_b: list[np.ndarray]) -> Any:
    """Per-channel mean/std matching between the two training domains: a baseline that needs no network."""
    stats = []
    for images in (domain_a, domain_b):
        pixels = np.concatenate([im.reshape(-1, 3).astype(np.float64) / 255.0 for im in images])
        stats.append((pixels.mean(0), pixels.std(0)))
    (ma, sa), (mb, sb) = stats

    def apply(x: np.ndarray, direction: str) -> np.ndarray:
        src, dst = ((ma, sa), (mb, sb)) if direction == "ab" else ((mb, sb), (ma, sa))
        y = (x.transpose(0, 2, 3, 1) - src[0]) / src[1] * dst[1] + dst[0]
        return np.clip(y, 0.0, 1.0).transpose(0, 3, 1, 2).astype(np.float32)

    return apply


def cyclegan_rows(app: Any, ckpt: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Identity, colour transfer and CycleGAN figures for both directions, plus the cycle errors."""
    scores = app.evaluate()
    transfer = colour_transfer(*builtin_domains())
    rows = []
    for d in ("ab", "ba"):
        rows.append({"method": "identity", "direction": d, **{k: scores[f"identity_{k}_{d}"] for k in FIGURES}})
        ct = app.evaluate_direction(d, lambda x, d=d: transfer(x, d))
        rows.append({"method": "colour statistics transfer", "direction": d, **{k: ct[f"{k}_{d}"] for k in FIGURES}})
        rows.append({"method": "CycleGAN", "direction": d, **{k: scores[f"{k}_{d}"] for k in FIGURES},
                     **_trained(ckpt)})
    return rows, {"cycle_l1_a": scores["cycle_l1_a"], "cycle_l1_b": scores["cycle_l1_b"]}


def pix2pix_picture(gan: Any, l1: Any, rows: int) -> Image.Image:
    side = max(gan.multiple, 128)
    pairs = gan.held_out()
    edges, photos = te.crops([a for a, _ in pairs], rows, side, side), te.crops([b for _, b in pairs], rows, side, side)
    out_gan, out_l1 = gan._predict(edges), l1._predict(edges)
    return stack([labelled_row([(to_pil(edges[i].transpose(1, 2, 0)), "edges (input)"),
                                (to_pil(out_l1[i].transpose(1, 2, 0)), "L1-only U-Net"),
                                (to_pil(out_gan[i].transpose(1, 2, 0)), "pix2pix"),
                                (to_pil(photos[i].transpose(1, 2, 0)), "photo (truth)")]) for i in range(rows)])


def cyclegan_picture(app: Any, rows: int) -> Image.Image:
    held = app.held_out()
    to8 = [(to_uint8(a), to_uint8(b)) for a, b in held]
    a, b = te.crops([x for x, _ in to8], rows, 128, 128), te.crops([y for _, y in to8], rows, 128, 128)
    fake_b, fake_a = app._predict("ab", a), app._predict("ba", b)
    return stack([labelled_row([(to_pil(a[i].transpose(1, 2, 0)), "A (input)"),
                                (to_pil(fake_b[i].transpose(1, 2, 0)), "G_AB(A)"),
                                (to_pil(b[i].transpose(1, 2, 0)), "true B = dusk(A)"),
                                (to_pil(fake_a[i].transpose(1, 2, 0)), "G_BA(true B)"),
                                (to_pil(a[i].transpose(1, 2, 0)), "A (truth)")]) for i in range(rows)])


def _minutes(row: dict[str, Any]) -> str:
    return f"{row['train_seconds'] / 60:.1f}" if row.get("train_seconds") else "–"


def markdown(doc: dict[str, Any]) -> str:
    """Both tables as Markdown."""
    lines = [f"Held-out translation quality (scikit-learn flower + left half of scikit-image coffee); RGB figures in "
             f"[0, 1]; sharpness = gradient energy relative to the truth (1.0 = as sharp). CPU: {doc['cpu']}", ""]
    if doc.get("pix2pix"):
        lines += ["pix2pix, edges -> photo:", "",
                  "| method | steps | train min | L1 | PSNR dB | SSIM | sharpness |", "|---|---|---|---|---|---|---|"]
        for r in doc["pix2pix"]:
            lines.append(f"| {r['method']} | {r.get('steps', '–')} | {_minutes(r)} | {r['l1']:.4f} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} | {r['sharpness']:.3f} |")
        lines.append("")
    if doc.get("cyclegan"):
        lines += ["CycleGAN, hidden dusk grading (truth = the exact transform of the held-out photo):", "",
                  "| method | direction | steps | train min | L1 | PSNR dB | SSIM | sharpness |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in doc["cyclegan"]:
            lines.append(f"| {r['method']} | {DIRECTION_LABEL[r['direction']]} | {r.get('steps', '–')} | {_minutes(r)} | "
                         f"{r['l1']:.4f} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['sharpness']:.3f} |")
        c = doc["cycle"]
        lines += ["", f"Cycle reconstruction L1: A -> B -> A {c['cycle_l1_a']:.4f}, B -> A -> B {c['cycle_l1_b']:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pix2pix", type=Path, help="pix2pix checkpoint (gan_weight > 0)")
    parser.add_argument("--l1", type=Path, help="pix2pix checkpoint trained with gan_weight=0 (the L1-only U-Net)")
    parser.add_argument("--cyclegan", type=Path, help="cyclegan checkpoint")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/translation"))
    parser.add_argument("--rows", type=int, default=2, help="held-out crops per side-by-side picture")
    args = parser.parse_args(argv)
    if bool(args.pix2pix) != bool(args.l1) or not (args.pix2pix or args.cyclegan):
        parser.error("give --pix2pix with --l1, and/or --cyclegan")
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"cpu": describe(),
                           "command": "python -m ganserve.benchmarks.translation_quality " + " ".join(argv or sys.argv[1:])}
    if args.pix2pix:
        gan, l1 = _load(args.pix2pix, "pix2pix", False), _load(args.l1, "pix2pix", True)
        doc["pix2pix"] = pix2pix_rows(gan, l1, args.pix2pix, args.l1)
        pix2pix_picture(gan, l1, args.rows).save(args.out / "pix2pix.png")
    if args.cyclegan:
        app = _load(args.cyclegan, "cyclegan")
        doc["cyclegan"], doc["cycle"] = cyclegan_rows(app, args.cyclegan)
        cyclegan_picture(app, args.rows).save(args.out / "cyclegan.png")
    md = markdown(doc)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
