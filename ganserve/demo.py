"""`ganserve demo`, the main job: models (shipped, reused or trained) → export → serve → real requests → report.

A second run reuses what the first made: runs/demo/ checkpoints, the model repository, and shipped models.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.contract import CARD_FILE, ModelCard, model_versions
from ganserve.errors import GanserveError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "models"  # trained models that ship with the project: models/<name>/checkpoint.pt


@dataclass
class DemoConfig:
    out: Path = Path("demo-output")
    repo: Path = Path("model-repository")
    runs: Path = Path("runs/demo")
    train_minutes: float = 3.0  # per application, only where no shipped or earlier model exists
    bench_requests: int = 20
    retrain: bool = False
    tiny: bool = False  # tests: tiny networks and a few steps


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


# -- step 1: a trained model ------------------------------------------------------------------------------
def sr_checkpoint(cfg: DemoConfig) -> tuple[Path, str]:
    """The SR checkpoint to serve and where it came from: shipped > earlier demo run > train now."""
    shipped = SHIPPED / "srresnet" / "checkpoint.pt"
    if shipped.is_file() and not cfg.retrain and not cfg.tiny:
        return shipped, f"shipped model {shipped.relative_to(ROOT)}"
    run_dir = cfg.runs / "srresnet"
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.is_file() and not cfg.retrain:
        return ckpt, f"reused {ckpt} from an earlier run"
    from training.trainer import train

    overrides = {"blocks": 1, "channels": 8, "batch_size": 4} if cfg.tiny else {}
    recipe = ROOT / "training" / "configs" / "srresnet_cpu30.yaml"
    say(f"no trained SR model found: training srresnet on the built-in photos ({recipe.name} {overrides})")
    path = train("srresnet", overrides, steps=2 if cfg.tiny else None, config_file=recipe,
                 budget_minutes=None if cfg.tiny else cfg.train_minutes, out_dir=run_dir, progress=not cfg.tiny)
    budget = "2 steps (tiny)" if cfg.tiny else f"{cfg.train_minutes:g} min budget"
    return path, f"trained now ({recipe.name}, {budget}, {overrides or 'no overrides'})"


# -- step 2: export -------------------------------------------------------------------------------------------
def ensure_exported(ckpt: Path, repo: Path, name: str) -> ModelCard:
    """Export `ckpt` as `name` unless the repository already holds an export of this exact checkpoint."""
    from export.card import file_sha256

    card_path = repo / name / CARD_FILE
    sha = file_sha256(ckpt)
    if card_path.is_file() and model_versions(repo / name):
        card = ModelCard.load(card_path)
        if card.source.get("checkpoint_sha256") == sha:
            say(f"model repository already holds {name} v{card.version} exported from this checkpoint: reused")
            return card
    from export.exporter import export_checkpoint

    say(f"exporting {ckpt} -> {repo}/{name} (ONNX, parity check, model card)")
    export_checkpoint(ckpt, repo, name=name)
    return ModelCard.load(card_path)


# -- step 3/4: serve and request ---------------------------------------------------------------------------
def super_resolve_held_out(server: str, card: ModelCard, out: Path) -> list[dict]:
    """Send every held-out photo's LR version to the server's SuperResolve; write side-by-sides; measure quality."""
    import torch

    from serving.client import ImagesClient
    from training import metrics
    from training.data.images import upscale_bicubic
    from training.models.sr_eval import held_out_pairs, labelled_row, to_pil

    scale = card.scale
    rows = []
    with ImagesClient(server) as client:
        for i, (hr, lr) in enumerate(held_out_pairs(scale)):
            lr_img = to_pil(lr[0].transpose(1, 2, 0))
            buf = io.BytesIO()
            lr_img.save(buf, format="PNG")
            t0 = time.perf_counter()
            reply = client.super_resolve(card.name, buf.getvalue())
            latency_ms = (time.perf_counter() - t0) * 1e3
            sr_img = Image.open(io.BytesIO(reply.image)).convert("RGB")
            sr = np.asarray(sr_img, dtype=np.float64) / 255.0
            # bicubic from the same 8-bit LR image the server received
            lr8 = np.asarray(lr_img, dtype=np.float32)[None].transpose(0, 3, 1, 2) / 255.0
            bic = upscale_bicubic(torch.from_numpy(lr8), scale)[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float64)
            row = {
                "image": i, "lr_size": list(lr.shape[2:]), "sr_size": [sr_img.height, sr_img.width],
                "psnr_y": metrics.psnr_y(sr, hr, scale), "ssim_y": metrics.ssim_y(sr, hr, scale),
                "bicubic_psnr_y": metrics.psnr_y(bic, hr, scale), "bicubic_ssim_y": metrics.ssim_y(bic, hr, scale),
                "sharpness": metrics.sharpness_ratio(sr, hr, scale),
                "bicubic_sharpness": metrics.sharpness_ratio(bic, hr, scale),
                "client_latency_ms": latency_ms,
            }
            rows.append(row)
            labelled_row([
                (lr_img.resize(sr_img.size, Image.NEAREST), "input (LR, nearest)"),
                (to_pil(bic), f"bicubic {row['bicubic_psnr_y']:.2f} dB"),
                (sr_img, f"{card.name} {row['psnr_y']:.2f} dB"),
                (to_pil(hr), "ground truth"),
            ]).save(out / f"sr_held_out_{i}.png")
            sr_img.save(out / f"sr_held_out_{i}_output.png")
    return rows


# -- the whole job -----------------------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig) -> dict:
    from benchmarks.bench import BenchConfig, run_bench
    from serving.server import start_subprocess

    t_start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    say("step 1/5: trained models")
    ckpt, origin = sr_checkpoint(cfg)
    say(f"srresnet: {origin}")
    say("step 2/5: export to the model repository")
    card = ensure_exported(ckpt, cfg.repo, "srresnet")
    say("step 3/5: start the server on 127.0.0.1")
    proc, port, metrics_port = start_subprocess(cfg.repo)
    server = f"127.0.0.1:{port}"
    say(f"server ready at {server} (metrics on :{metrics_port})")
    try:
        say("step 4/5: super-resolve the held-out photos through the image API")
        rows = super_resolve_held_out(server, card, cfg.out)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    for r in rows:
        say(f"held-out image {r['image']}: {r['lr_size']} -> {r['sr_size']}: PSNR-Y {r['psnr_y']:.2f} dB "
            f"(bicubic {r['bicubic_psnr_y']:.2f}), {r['client_latency_ms']:.0f} ms")
    say("step 5/5: latency table (torch eager vs in-process onnxruntime vs served)")
    bench_doc, files = run_bench(BenchConfig(
        repo=cfg.repo, model="srresnet", sizes=[32 if cfg.tiny else 64], batches=[1], concurrency=[1, 4],
        duration=None, requests=4 if cfg.tiny else cfg.bench_requests, out=cfg.out / "latency", checkpoint=ckpt,
        paths=["torch", "ort", "oip-raw", "image-api"], command="ganserve demo (latency step)"))
    summary = {
        "model": "srresnet", "checkpoint": str(ckpt), "origin": origin, "card_metrics": card.metrics,
        "held_out_requests": rows,
        "mean_psnr_y": float(np.mean([r["psnr_y"] for r in rows])),
        "mean_bicubic_psnr_y": float(np.mean([r["bicubic_psnr_y"] for r in rows])),
        "latency_report": str(files["markdown"]), "wall_seconds": time.perf_counter() - t_start,
    }
    (cfg.out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [
        "# ganserve demo", "",
        f"Model: srresnet ({origin}); served by ganserve over gRPC on 127.0.0.1.", "",
        "| held-out image | LR size | PSNR-Y model | PSNR-Y bicubic | SSIM-Y model | SSIM-Y bicubic | request ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['image']} | {r['lr_size'][0]}×{r['lr_size'][1]} | {r['psnr_y']:.2f} | "
                     f"{r['bicubic_psnr_y']:.2f} | {r['ssim_y']:.4f} | {r['bicubic_ssim_y']:.4f} | "
                     f"{r['client_latency_ms']:.0f} |")
    lines += ["", "Side-by-side (input, bicubic, model, ground truth): "
              + ", ".join(f"`sr_held_out_{r['image']}.png`" for r in rows), "",
              files["markdown"].read_text().replace("# ganserve bench", "## Latency")]
    (cfg.out / "summary.md").write_text("\n".join(lines) + "\n")
    say(f"done in {summary['wall_seconds']:.0f} s: see {cfg.out}/summary.md")
    return summary


def add_commands(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(name, help="the main job: models, export, serve, requests, report",
                              description="Use the shipped SR model (or reuse/train one), export it, serve it on "
                                          "127.0.0.1, super-resolve the held-out photos through the image API and "
                                          "write side-by-side images, quality figures and a latency table.")
    p.add_argument("--out", type=Path, default=DemoConfig.out, help="output folder (default demo-output)")
    p.add_argument("--repo", type=Path, default=DemoConfig.repo, help="model repository (default model-repository)")
    p.add_argument("--runs", type=Path, default=DemoConfig.runs, help="training runs folder (default runs/demo)")
    p.add_argument("--train-minutes", type=float, default=DemoConfig.train_minutes,
                   help="training budget per model where none is shipped or reusable (default 3)")
    p.add_argument("--bench-requests", type=int, default=DemoConfig.bench_requests,
                   help="requests per latency-table row (default 20)")
    p.add_argument("--retrain", action="store_true", help="train even where a shipped or earlier model exists")
    p.add_argument("--tiny", action="store_true", help="tiny networks and a few steps (for tests)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.train_minutes <= 0 or args.bench_requests < 1:
        raise GanserveError("--train-minutes and --bench-requests must be positive")
    cfg = DemoConfig(out=args.out, repo=args.repo, runs=args.runs, train_minutes=args.train_minutes,
                     bench_requests=args.bench_requests, retrain=args.retrain, tiny=args.tiny)
    run_demo(cfg)
    return 0
