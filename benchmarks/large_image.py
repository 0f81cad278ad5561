"""One large image through a served image-to-image model, next to torch bf16 on the whole image: wall time, the tile
plan and peak memory of each.

    python -m ganserve.benchmarks.large_image --repo DIR --model NAME [--size 1024] [--checkpoint CKPT] \
        [--tile-size 128 --tile-overlap 16] [--server-arg ...] [--out DIR]

The server runs as its own process (`ganserve serve`), so its peak RSS (VmHWM) is its own; the torch figure is this
process's peak RSS growth over the call. The picture is a built-in photo resized to SIZE x SIZE.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from ganserve.benchmarks.loadgen import ProcessMonitor
from ganserve.core.machine import cpu_info
from ganserve.core.contract import CARD_FILE, ModelCard
from ganserve.core.errors import GanserveError
from ganserve.core.pictures import png_bytes
from ganserve.serving.client import ImageOptions, ImagesClient
from ganserve.serving.server import start_subprocess
from ganserve.training.data.images import BUILTIN_HELD_OUT, load_builtin


def test_picture(size: int) -> np.ndarray:
    """A held-out built-in photo resized to size x size, 8-bit RGB."""
    photo = load_builtin(BUILTIN_HELD_OUT[0])
    return np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC))


def _conditions(card: ModelCard) -> dict[str, str]:
    return {spec.name: (spec.default or (spec.labels or ["0"])[0]) for spec in card.conditions()}


def served(repo: Path, card: ModelCard, picture: np.ndarray, tile: int, overlap: int, extra: list[str]) -> dict:
    """Wall time, server timing, tile count and the server's peak RSS for one request (after a 64x64 warm-up)."""
    proc, port, _, _ = start_subprocess(repo, ["--max-pixels", str(max(4096 * 4096, picture.size)), *extra])
    try:
        monitor = ProcessMonitor([proc.pid])
        with ImagesClient(f"127.0.0.1:{port}", max_message_mb=512, timeout=3600) as client:
            client.transform(card.name, png_bytes(picture[:64, :64]), conditions=_conditions(card))
            before = monitor.peak_rss_mb()
            t0 = time.perf_counter()
            reply = client.transform(card.name, png_bytes(picture), conditions=_conditions(card),
                                     options=ImageOptions(tile_size=tile, tile_overlap=overlap))
            wall = time.perf_counter() - t0
            out = Image.open(io.BytesIO(reply.image))
        return {"wall_s": wall, "server_total_ms": reply.timing.total_ms, "infer_ms": reply.timing.infer_ms,
                "tiles": reply.tiles, "tile_size": tile, "tile_overlap": overlap, "output": [out.width, out.height],
                "server_peak_rss_mb": monitor.peak_rss_mb(), "server_rss_before_mb": before}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _peak_sampler(stop: threading.Event, peak: list[float]) -> None:
    me = psutil.Process()
    while not stop.is_set():
        peak[0] = max(peak[0], me.memory_info().rss / 2**20)
        stop.wait(0.05)


def torch_bf16(checkpoint: Path, card: ModelCard, picture: np.ndarray) -> dict:
    """torch eager, bf16 autocast + channels_last on the whole image (after a 64x64 warm-up)."""
    import torch

    from ganserve.training.checkpoint import build_from_checkpoint

    if not cpu_info()["bf16_hardware"]:
        return {"skipped": "no bf16 hardware on this CPU"}
    module = build_from_checkpoint(checkpoint).export_spec().module.eval().to(memory_format=torch.channels_last)
    spec = card.input_by_role("image")
    lo, hi = spec.value_range or [0.0, 1.0]
    x = torch.from_numpy(lo + (hi - lo) * picture.astype(np.float32).transpose(2, 0, 1)[None] / 255.0)
    extra = [torch.from_numpy(np.eye(len(s.labels or [0]), dtype=np.float32)[:1]) for s in card.conditions()]

    def run(inp: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return module(inp.contiguous(memory_format=torch.channels_last), *extra)

    run(x[:, :, :64, :64])
    base = psutil.Process().memory_info().rss / 2**20
    peak, stop = [base], threading.Event()
    sampler = threading.Thread(target=_peak_sampler, args=(stop, peak), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    y = run(x)
    wall = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return {"wall_s": wall, "output": [int(y.shape[-1]), int(y.shape[-2])], "rss_growth_mb": peak[0] - base,
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.large_image", description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, default=1024, help="input side in pixels (default 1024)")
    p.add_argument("--checkpoint", type=Path, help="training checkpoint, for the torch bf16 figure")
    p.add_argument("--tile-size", type=int, default=128)
    p.add_argument("--tile-overlap", type=int, default=16)
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for `ganserve serve` (repeatable)")
    p.add_argument("--out", type=Path, help="folder for results.json")
    args = p.parse_args(argv)
    try:
        card = ModelCard.load(args.repo / args.model / CARD_FILE)
    except (OSError, GanserveError) as exc:
        print(f"error: {args.repo / args.model}: no readable model card ({exc})", file=sys.stderr)
        return 2
    if args.size < 16:
        print("error: --size must be at least 16", file=sys.stderr)
        return 2
    picture = test_picture(args.size)
    info = cpu_info()
    print(f"[large-image] {info['cpu_model']} ({info['logical_cpus']} logical CPUs); {args.model} at {args.size}x{args.size}",
          flush=True)
    doc = {"machine": info, "model": args.model, "size": args.size, "command": " ".join(sys.argv),
           "served": served(args.repo, card, picture, args.tile_size, args.tile_overlap, args.server_arg)}
    print(f"[large-image] served: {doc['served']}", flush=True)
    if args.checkpoint:
        doc["torch_bf16"] = torch_bf16(args.checkpoint, card, picture)
        print(f"[large-image] torch bf16: {doc['torch_bf16']}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
