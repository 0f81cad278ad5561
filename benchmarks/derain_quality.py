"""Held-out raindrop removal: attentive GAN vs the rainy input vs the same autoencoder trained with L1 alone.

    python -m ganserve.benchmarks.derain_quality runs/derain/checkpoint.pt runs/derain_l1/checkpoint.pt \
        --out benchmarks/results/derain

Writes results.json, results.md and side_by_side.png (rainy | attention map | GAN | L1 baseline | clean, one held-out
crop per row); prints the Markdown table with the CPU model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.benchmarks.peaks import describe
from ganserve.core.pictures import enlarge, labelled_row, stack, to_pil
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.data.raindrops import held_out_pairs, stack_pairs

GAN, BASELINE, RAINY = "attentive GAN", "autoencoder, L1 only", "rainy input"


def _row(method: str, ckpt: Path | None, metrics: dict, payload: dict | None) -> dict:
    info = (payload or {}).get("metrics", {}) or {}
    return {"method": method, "checkpoint": str(ckpt) if ckpt else None,
            "steps": payload["step"] if payload else None, "train_seconds": info.get("elapsed_seconds"),
            "budget_minutes": info.get("budget_minutes"), **metrics}


def _grey(att: np.ndarray) -> Image.Image:
    return to_pil(np.repeat(att[0][:, :, None], 3, axis=2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gan", type=Path, help="attentive-gan checkpoint")
    parser.add_argument("baseline", type=Path, help="attentive-gan checkpoint trained with baseline_l1=true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/derain"))
    parser.add_argument("--rows", type=int, default=3, help="held-out crops in the side-by-side picture")
    args = parser.parse_args(argv)
    apps, payloads = {}, {}
    for method, ckpt, want_baseline in ((GAN, args.gan, False), (BASELINE, args.baseline, True)):
        payload = load_checkpoint(ckpt)
        app = build_from_checkpoint(ckpt)
        if payload["model"] != "attentive-gan" or bool(app.config.baseline_l1) != want_baseline:
            kind = "baseline_l1=true" if want_baseline else "the GAN (baseline_l1=false)"
            print(f"derain_quality: {ckpt} is not an attentive-gan checkpoint of {kind}", file=sys.stderr)
            return 2
        apps[method], payloads[method] = app, payload
    scores = {m: app.evaluate() for m, app in apps.items()}
    rainy_metrics = {"psnr": scores[GAN]["rainy_psnr"], "ssim": scores[GAN]["rainy_ssim"], "psnr_gain": 0.0,
                     "ssim_gain": 0.0}
    rows = [_row(RAINY, None, rainy_metrics, None)]
    rows += [_row(m, ckpt, scores[m], payloads[m]) for m, ckpt in ((GAN, args.gan), (BASELINE, args.baseline))]

    args.out.mkdir(parents=True, exist_ok=True)
    rainy, clean, _ = (t.numpy() for t in stack_pairs(held_out_pairs()[: args.rows]))
    gan_out, att = apps[GAN].predict(rainy)
    base_out, _ = apps[BASELINE].predict(rainy)
    sheets = [labelled_row([(to_pil(rainy[i].transpose(1, 2, 0)), "rainy"), (_grey(att[i]), "attention"),
                            (to_pil(gan_out[i].transpose(1, 2, 0)), "attentive GAN"),
                            (to_pil(base_out[i].transpose(1, 2, 0)), "L1 baseline"),
                            (to_pil(clean[i].transpose(1, 2, 0)), "clean")]) for i in range(len(rainy))]
    enlarge(stack(sheets), 2).save(args.out / "side_by_side.png")

    cpu = describe()
    lines = [f"Held-out raindrop removal: {int(scores[GAN]['eval_images'])} rendered crops of the held-out photos; "
             f"PSNR/SSIM on RGB against the clean image; CPU: {cpu}", "",
             "| method | steps | train min | PSNR dB | vs rainy | SSIM | vs rainy | attention IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        minutes = f"{r['train_seconds'] / 60:.1f}" if r["train_seconds"] else "–"
        iou = f"{r['attention_iou']:.3f}" if "attention_iou" in r else "–"
        lines.append(f"| {r['method']} | {r['steps'] if r['steps'] is not None else '–'} | {minutes} | "
                     f"{r['psnr']:.2f} | {r['psnr_gain']:+.2f} | {r['ssim']:.4f} | {r['ssim_gain']:+.4f} | {iou} |")
    md = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(md)
    doc = {"cpu": cpu, "command": "python -m ganserve.benchmarks.derain_quality " + " ".join(argv or sys.argv[1:]),
           "rows": rows}
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
