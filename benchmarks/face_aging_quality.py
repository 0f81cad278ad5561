"""Face aging on held-out identities, every source -> target age-group pair, next to "return the input unchanged".

    python -m ganserve.benchmarks.face_aging_quality models/face-aging/checkpoint.pt --judges models/face-judges \
        --identities 24 --out benchmarks/results/face_aging --grid docs/face_aging/grid.png

For each held-out identity rendered at the six group centre ages (one scene each), the generator is asked for all
six groups. Scored against the true render at the target age: target-age accuracy by the independent age judge,
identity verification by the independent identity embedding (threshold at 1% false accepts among true renders of
different identities), rank-1 identification among the held-out identities, PSNR and SSIM. The same figures for the
input returned unchanged, and for the true renders themselves (what the judges can reach), sit beside them.
Writes results.json (6x6 matrices and means), results.md, and the grid picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ganserve.core.errors import GanserveError
from ganserve.core.machine import describe
from ganserve.core.pictures import enlarge, to_pil
from ganserve.training.checkpoint import build_from_checkpoint
from ganserve.training.age_groups import AGE_GROUPS
from ganserve.training.applications.face_aging_eval import Judges, held_out_faces, pair_outputs, score_pairs, summarise
from ganserve.training.networks.face_aging import GROUPS
from ganserve.training.applications.face_judges import load_net

MATRIX_KEYS = {"target_age_accuracy": "age_hit", "id_verify_rate": "id_verified", "id_rank1": "id_rank1",
               "psnr": "psnr", "ssim": "ssim"}


def _truth(identities: int) -> Any:
    faces = held_out_faces(identities)

    def predict(x: np.ndarray, cond: np.ndarray) -> np.ndarray:
        out = []
        for img, c in zip(x, cond):
            i, _ = np.argwhere(np.all(faces == img, axis=(2, 3, 4)))[0]
            out.append(faces[i, int(c.argmax())])
        return np.stack(out)
    return predict


def measure(app: Any, judges: Judges, identities: int) -> dict[str, Any]:
    """Per-pair matrices (source rows, target columns) and means for the model, the input and the truth."""
    methods = {"model": app.predict, "input unchanged": lambda x, c: x, "true render": _truth(identities)}
    out: dict[str, Any] = {}
    for name, predict in methods.items():
        t0 = time.perf_counter()
        outputs = pair_outputs(predict, identities)
        rows = score_pairs(outputs, judges)
        out[name] = {"summary": summarise(rows),
                     "matrices": {m: rows[k].mean(axis=0).round(4).tolist() for m, k in MATRIX_KEYS.items()},
                     "seconds": time.perf_counter() - t0}
        if name == "model":
            out["_outputs"] = outputs
    return out


def markdown(results: dict[str, Any], header: str) -> str:
    """The summary table and the model's per-pair matrices as Markdown."""
    lines = [header, "", "| method | target-age acc. (changed) | target-age acc. (all 36) | id verified (changed) | "
             "id rank-1 (changed) | id false accepts | PSNR dB (changed) | SSIM (changed) |", "|" + "---|" * 8]
    for name in ("model", "input unchanged", "true render"):
        s = results[name]["summary"]
        lines.append(f"| {name} | {s['target_age_accuracy_changed']:.3f} | {s['target_age_accuracy']:.3f} | "
                     f"{s['id_verify_rate_changed']:.3f} | {s['id_rank1_changed']:.3f} | "
                     f"{s['id_false_accept_rate_changed']:.4f} | "
                     f"{s['psnr_changed'] if name != 'true render' else float('inf'):.2f} | {s['ssim_changed']:.4f} |")
    for metric in ("target_age_accuracy", "id_verify_rate", "psnr"):
        lines += ["", f"Model, {metric} by pair (rows: source group, columns: target group):", "",
                  "| source \\ target | " + " | ".join(AGE_GROUPS) + " |", "|" + "---|" * (GROUPS + 1)]
        for s, row in zip(AGE_GROUPS, results["model"]["matrices"][metric]):
            fmt = "{:.1f}" if metric == "psnr" else "{:.2f}"
            lines.append(f"| {s} | " + " | ".join(fmt.format(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def grid_picture(outputs: np.ndarray, identities: list[int], source: int, scale: int = 2) -> Image.Image:
    """Rows: identities; first column the input (at the source group); then per age group generated | true."""
    truth = held_out_faces(outputs.shape[0])
    cell, header = 64 * scale, 18
    cols = 1 + 2 * GROUPS
    sheet = Image.new("RGB", (cols * cell + GROUPS * 4, header + len(identities) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 3), f"input {AGE_GROUPS[source]}", fill="black")

    def tile(a: np.ndarray) -> Image.Image:
        return enlarge(to_pil(a.transpose(1, 2, 0)), scale)

    for r, i in enumerate(identities):
        y = header + r * cell
        sheet.paste(tile(truth[i, source]), (0, y))
        for t in range(GROUPS):
            x = cell + t * (2 * cell + 4) + 4
            if r == 0:
                draw.text((x + 3, 3), f"{AGE_GROUPS[t]}: model | truth", fill="black")
            sheet.paste(tile(outputs[i, source, t]), (x, y))
            sheet.paste(tile(truth[i, t]), (x + cell, y))
    return sheet


def _save_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Command line: measure a face-aging checkpoint and write results.json, results.md and the grid."""
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.face_aging_quality", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--judges", type=Path, default=Path("models/face-judges"), help="folder with age_judge.pt, id_judge.pt")
    p.add_argument("--identities", type=int, default=24, help="held-out identities")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/face_aging"))
    p.add_argument("--grid", type=Path, default=None, help="grid PNG path (default OUT/grid.png)")
    p.add_argument("--grid-rows", type=int, default=5)
    p.add_argument("--source", default="30-39", help="age group of the grid's inputs")
    args = p.parse_args(argv)
    try:
        if args.identities < 2 or args.source not in AGE_GROUPS:
            raise GanserveError(f"--identities must be >= 2 and --source one of {', '.join(AGE_GROUPS)}")
        torch.set_num_threads(2)
        app = build_from_checkpoint(args.checkpoint)
        judges = Judges(load_net(args.judges / "age_judge.pt", "age_judge"), load_net(args.judges / "id_judge.pt", "id_judge"))
        t0 = time.perf_counter()
        results = measure(app, judges, args.identities)
        outputs = results.pop("_outputs")
        info = app.train_info
        doc = {"checkpoint": str(args.checkpoint), "step": info.get("step"), "judges": str(args.judges),
               "identities": args.identities, "pairs": args.identities * GROUPS * GROUPS, "cpu": describe(),
               "seconds": time.perf_counter() - t0, "age_groups": list(AGE_GROUPS), **results}
        args.out.mkdir(parents=True, exist_ok=True)
        _save_text(args.out / "results.json", json.dumps(doc, indent=1))
        header = (f"Held-out identities: {args.identities} x 36 source->target pairs ({doc['pairs']} outputs); "
                  f"checkpoint {args.checkpoint} (step {doc['step']}); CPU: {doc['cpu']}. "
                  "'changed' = the 30 pairs whose target group differs from the source group.")
        table = markdown(results, header)
        _save_text(args.out / "results.md", table)
        grid = args.grid or args.out / "grid.png"
        grid.parent.mkdir(parents=True, exist_ok=True)
        rows = list(range(min(args.grid_rows, args.identities)))
        grid_picture(outputs, rows, AGE_GROUPS.index(args.source)).save(grid)
    except GanserveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
