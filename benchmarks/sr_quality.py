"""Held-out SR quality of SRResNet vs SRGAN vs bicubic, with a side-by-side picture (bicubic | SRResNet | SRGAN | truth).

    python -m ganserve.benchmarks.sr_quality runs/srresnet/checkpoint.pt runs/srgan/checkpoint.pt --out docs/sr

Writes quality.json, quality.md and side_by_side.png; prints the Markdown table with the CPU model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from ganserve.benchmarks.peaks import describe
from ganserve.core.pictures import enlarge, labelled_row, to_pil
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.data.images import upscale_bicubic
from ganserve.training.applications.sr_eval import evaluate_sr, held_out_pairs


def _predictor(app) -> callable:
    module = app.export_spec().module.eval()

    def predict(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(lr)).numpy()
    return predict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="SR checkpoints (e.g. srresnet then srgan)")
    parser.add_argument("--out", type=Path, default=Path("docs/sr"))
    parser.add_argument("--crop", type=int, default=160, help="HR crop side of the side-by-side picture")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    rows, preds, scale = [], [], None
    for ckpt in args.checkpoints:
        payload = load_checkpoint(ckpt)
        app = build_from_checkpoint(ckpt)
        scale = app.config.scale
        predict = _predictor(app)
        metrics = evaluate_sr(predict, scale)
        rows.append({"model": payload["model"], "checkpoint": str(ckpt), "step": payload["step"],
                     "train_seconds": payload.get("metrics", {}).get("elapsed_s"), **metrics})
        preds.append((payload["model"], predict))
    hr, lr = held_out_pairs(scale)[0]
    c = args.crop // scale
    y0, x0 = (lr.shape[2] - c) // 2, (lr.shape[3] - c) // 2
    lr_crop = np.ascontiguousarray(lr[:, :, y0:y0 + c, x0:x0 + c])
    hr_crop = hr[y0 * scale:(y0 + c) * scale, x0 * scale:(x0 + c) * scale]
    bic = upscale_bicubic(torch.from_numpy(lr_crop), scale)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    panels = [(to_pil(bic), "bicubic")]
    panels += [(to_pil(p(lr_crop)[0].transpose(1, 2, 0)), name) for name, p in preds]
    panels.append((to_pil(hr_crop), "ground truth"))
    enlarge(labelled_row(panels, header=18), 2).save(args.out / "side_by_side.png")
    lines = [f"Held-out SR quality ×{scale} (Y channel, {scale}-px border cropped; mean over the held-out photos); "
             f"CPU: {describe()}", "",
             "| model | steps | PSNR-Y dB | vs bicubic | SSIM-Y | vs bicubic | sharpness (1.0 = truth) |",
             "|---|---|---|---|---|---|---|",
             f"| bicubic | – | {rows[0]['bicubic_psnr_y']:.2f} | 0.00 | {rows[0]['bicubic_ssim_y']:.4f} | 0.0000 | "
             f"{rows[0]['bicubic_sharpness']:.3f} |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['step']} | {r['psnr_y']:.2f} | {r['psnr_gain_y']:+.2f} | {r['ssim_y']:.4f} | "
                     f"{r['ssim_gain_y']:+.4f} | {r['sharpness']:.3f} |")
    md = "\n".join(lines) + "\n"
    (args.out / "quality.md").write_text(md)
    (args.out / "quality.json").write_text(json.dumps(rows, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
