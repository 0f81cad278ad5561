"""Held-out translation quality: pix2pix vs the L1-only U-Net vs the identity mapping (its built-in task: grey ->
colour or edges -> photo), and CycleGAN runs both ways vs the identity mapping and a colour-statistics transfer
(hidden dusk grading).

    python -m ganserve.benchmarks.translation_quality --pix2pix runs/pix2pix/checkpoint.pt \
        --l1 runs/pix2pix-l1/checkpoint.pt --cyclegan runs/cyclegan/checkpoint.pt [--cyclegan runs/other/checkpoint.pt] \
        --out benchmarks/results/translation

Writes results.json, results.md, pix2pix.png (input | L1-only | pix2pix | photo) and cyclegan.png (per run: A |
G_AB(A) | true B | G_BA(true B) | A, crops enlarged 2x so a grid pattern shows); prints the Markdown tables with the
CPU model. Colourfulness is Hasler and Suesstrunk's; grid is the error's fixed 4x4-pixel pattern in grey levels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ganserve.benchmarks.peaks import describe
from ganserve.core.image_metrics import to_uint8
from ganserve.core.pictures import enlarge, labelled_row, stack, to_pil
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint
from ganserve.training.data.paired import TASK_DESCRIPTIONS
from ganserve.training.data.unpaired import builtin_domains
from ganserve.training.applications import translation_eval as te

FIGURES = ("l1", "psnr", "ssim", "sharpness")
EXTRA = ("grid", "colourfulness")  # where the evaluation gives them
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


def _figures(scores: dict[str, float], suffix: str = "") -> dict[str, float]:
    return {k: scores[f"{k}{suffix}"] for k in FIGURES + EXTRA if f"{k}{suffix}" in scores}


def pix2pix_rows(gan: Any, l1: Any, gan_ckpt: Path, l1_ckpt: Path) -> list[dict[str, Any]]:
    """Identity, L1-only and pix2pix figures on the held-out pairs of the runs' built-in task (and the truth's
    colourfulness for the colour task)."""
    if gan.config.task != l1.config.task:
        raise SystemExit(f"translation_quality: the pix2pix run is on {gan.config.task!r}, the L1 run on {l1.config.task!r}")
    g, b = gan.evaluate(), l1.evaluate()
    colour = gan.config.task == "colour"
    rows = [{"method": "identity (the grey input)" if colour else "identity (edge map)",
             **{k: g[f"identity_{k}"] for k in FIGURES}, **({"colourfulness": 0.0} if colour else {})},
            {"method": "L1-only U-Net", **_figures(b), **_trained(l1_ckpt)},
            {"method": "pix2pix", **_figures(g), **_trained(gan_ckpt)}]
    if colour:
        rows.append({"method": "truth (the photo)", "l1": 0.0, "psnr": float("inf"), "ssim": 1.0, "sharpness": 1.0,
                     "colourfulness": g["truth_colourfulness"]})
    return rows


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


def cyclegan_label(app: Any) -> str:
    """A run's name in the tables: CycleGAN and its generators' upsampling."""
    up = app.config.generator.get("upsample", "transpose")
    return f"CycleGAN, {'resize-convolution' if up == 'resize' else 'transposed-convolution'} upsampling"


def cyclegan_rows(apps: list[tuple[Any, Path]]) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Identity and colour transfer (once) and each run's figures for both directions, plus each run's cycle
    errors."""
    transfer = colour_transfer(*builtin_domains())
    all_scores = [(app, ckpt, app.evaluate()) for app, ckpt in apps]
    rows, cycles = [], {}
    first = all_scores[0][0]
    for d in ("ab", "ba"):
        ident = first.evaluate_direction(d, lambda x: x)
        rows.append({"method": "identity", "direction": d, **_figures(ident, f"_{d}")})
        ct = first.evaluate_direction(d, lambda x, d=d: transfer(x, d))
        rows.append({"method": "colour statistics transfer", "direction": d, **_figures(ct, f"_{d}")})
        for app, ckpt, scores in all_scores:
            rows.append({"method": cyclegan_label(app), "direction": d, **_figures(scores, f"_{d}"), **_trained(ckpt)})
    for app, ckpt, scores in all_scores:
        cycles[str(ckpt)] = {"method": cyclegan_label(app), "cycle_l1_a": scores["cycle_l1_a"],
                             "cycle_l1_b": scores["cycle_l1_b"]}
    return rows, cycles


def pix2pix_picture(gan: Any, l1: Any, rows: int) -> Image.Image:
    side = max(gan.multiple, 128)
    pairs = gan.held_out()
    edges, photos = te.crops([a for a, _ in pairs], rows, side, side), te.crops([b for _, b in pairs], rows, side, side)
    out_gan, out_l1 = gan._predict(edges), l1._predict(edges)
    name = "grey (input)" if gan.config.task == "colour" else "edges (input)"
    return stack([labelled_row([(to_pil(edges[i].transpose(1, 2, 0)), name),
                                (to_pil(out_l1[i].transpose(1, 2, 0)), "L1-only U-Net"),
                                (to_pil(out_gan[i].transpose(1, 2, 0)), "pix2pix"),
                                (to_pil(photos[i].transpose(1, 2, 0)), "photo (truth)")]) for i in range(rows)])


def cyclegan_picture(apps: list[Any], rows: int) -> Image.Image:
    """Per run, ``rows`` held-out 96x96 crops through both generators, enlarged 2x (nearest) so a grid shows."""
    held = apps[0].held_out()
    to8 = [(to_uint8(a), to_uint8(b)) for a, b in held]
    a, b = te.crops([x for x, _ in to8], rows, 96, 96), te.crops([y for _, y in to8], rows, 96, 96)
    sheets = []
    for app in apps:
        fake_b, fake_a = app._predict("ab", a), app._predict("ba", b)
        tag = "resize-conv" if app.config.generator.get("upsample") == "resize" else "transposed conv"
        sheets += [labelled_row([(enlarge(to_pil(x[i].transpose(1, 2, 0)), 2), label) for x, label in (
            (a, "A (input)"), (fake_b, f"G_AB(A), {tag}"), (b, "true B = dusk(A)"), (fake_a, f"G_BA(true B), {tag}"),
            (a, "A (truth)"))]) for i in range(rows)]
    return stack(sheets)


def _opt(row: dict[str, Any], key: str, form: str) -> str:
    return f"{row[key]:{form}}" if key in row else "–"


def _minutes(row: dict[str, Any]) -> str:
    return f"{row['train_seconds'] / 60:.1f}" if row.get("train_seconds") else "–"


def markdown(doc: dict[str, Any]) -> str:
    """Both tables as Markdown."""
    lines = [f"Held-out translation quality (scikit-learn flower + left half of scikit-image coffee); RGB figures in "
             f"[0, 1]; sharpness = gradient energy relative to the truth (1.0 = as sharp). CPU: {doc['cpu']}", ""]
    if doc.get("pix2pix"):
        lines += [f"pix2pix, {doc.get('pix2pix_task', 'edges -> photo')}:", "",
                  "| method | steps | train min | L1 | PSNR dB | SSIM | sharpness | colourfulness | grid |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in doc["pix2pix"]:
            lines.append(f"| {r['method']} | {r.get('steps', '–')} | {_minutes(r)} | {r['l1']:.4f} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.4f} | {r['sharpness']:.3f} | {_opt(r, 'colourfulness', '.1f')} | "
                         f"{_opt(r, 'grid', '.2f')} |")
        lines.append("")
    if doc.get("cyclegan"):
        lines += ["CycleGAN, hidden dusk grading (truth = the exact transform of the held-out photo):", "",
                  "| method | direction | steps | train min | L1 | PSNR dB | SSIM | sharpness | grid |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in doc["cyclegan"]:
            lines.append(f"| {r['method']} | {DIRECTION_LABEL[r['direction']]} | {r.get('steps', '–')} | {_minutes(r)} | "
                         f"{r['l1']:.4f} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['sharpness']:.3f} | "
                         f"{_opt(r, 'grid', '.2f')} |")
        lines.append("")
        for ckpt, c in doc["cycle"].items():
            lines.append(f"Cycle reconstruction L1, {c['method']} ({ckpt}): A -> B -> A {c['cycle_l1_a']:.4f}, "
                         f"B -> A -> B {c['cycle_l1_b']:.4f}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pix2pix", type=Path, help="pix2pix checkpoint (gan_weight > 0)")
    parser.add_argument("--l1", type=Path, help="pix2pix checkpoint trained with gan_weight=0 (the L1-only U-Net)")
    parser.add_argument("--cyclegan", type=Path, action="append", default=[],
                        help="cyclegan checkpoint (repeat to compare runs in one table)")
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
        doc["pix2pix_task"] = TASK_DESCRIPTIONS[gan.config.task]
        pix2pix_picture(gan, l1, args.rows).save(args.out / "pix2pix.png")
    if args.cyclegan:
        apps = [(_load(ckpt, "cyclegan"), ckpt) for ckpt in args.cyclegan]
        doc["cyclegan"], doc["cycle"] = cyclegan_rows(apps)
        cyclegan_picture([app for app, _ in apps], args.rows).save(args.out / "cyclegan.png")
    md = markdown(doc)
    (args.out / "results.md").write_text(md)
    (args.out / "results.json").write_text(json.dumps(doc, indent=2))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
