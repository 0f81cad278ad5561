"""Server memory under many distinct image sizes (a soak), and what bucket padding costs a tile-safe model.

    python -m ganserve.benchmarks.soak_shapes --repo models --model cyclegan-ab --seconds 150 --sizes 300
        --concurrency 4 [--server-arg=--providers=openvino ...] [--label L] [--out benchmarks/results/shapes]
    python -m ganserve.benchmarks.soak_shapes --repo models --model srresnet --bucket-cost [--repeats 10]

Soak: starts `ganserve serve` on a repository of the one model (a symlink to its folder), then sends image-API
requests over HTTP for --seconds at --concurrency, cycling through --sizes distinct picture sizes (seeded; sides
48..320 at aspect ratios from 1:2 to 2:1). Every second it samples the server's RSS and its compiled-shape gauge.
Reports requests, errors, latency, RSS at start/mid/end, the growth over the whole run and over its second half (and
the second half's slope), the most compiled shapes seen and the session rebuilds (ganserve_shape_evictions_total).

Bucket cost (--bucket-cost, tile-safe models): whole-image requests (tile_size=0) at sides 64, 100, 128, 250 and 256,
first with --buckets, then without (the default): the pixels the network runs on, the first request's latency
(a new shape) and the p50 of --repeats more. Both modes print the CPU first and write JSON + Markdown to --out.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.core.contract import CARD_FILE, ModelCard
from ganserve.core.machine import cpu_info
from ganserve.serving.imaging import bucket_size, pad_to_bucket
from ganserve.serving.server import start_subprocess
from ganserve.serving.tiling import on_grid

ASPECTS = (1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0, 0.5)
COST_SIDES = (64, 100, 128, 250, 256)
DEFAULT_TILE = 128  # the server's default --tile-size


def distinct_sizes(count: int, seed: int = 0, low: int = 48, high: int = 320) -> list[tuple[int, int]]:
    """`count` distinct (height, width) pairs, sides in [low, high] at the ASPECTS ratios, in a seeded order."""
    rng = np.random.default_rng(seed)
    sizes: dict[tuple[int, int], None] = {}
    for _ in range(count * 1000):
        if len(sizes) == count:
            break
        height = int(rng.integers(low, high + 1))
        width = int(np.clip(round(height * ASPECTS[rng.integers(len(ASPECTS))]), low, high))
        sizes.setdefault((height, width))
    if len(sizes) < count:
        raise SystemExit(f"cannot draw {count} distinct sizes with sides {low}..{high}")
    return list(sizes)


def picture(height: int, width: int) -> np.ndarray:
    """A smooth synthetic RGB picture (gradients and waves, no randomness), 8-bit."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [np.sin(x / 9.0 + c) * np.cos(y / 13.0 - c) * 0.35 + 0.5 + 0.1 * (x + y) / (height + width)
                for c in range(3)]
    return np.clip(np.stack(channels, axis=-1) * 255, 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def post(port: int, model: str, data: bytes, query: str = "", timeout: float = 120.0) -> tuple[int | None, float]:
    """(HTTP status or None, seconds) of one image-API request."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{model}/transform{query}", data=data,
                                     method="POST")
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            reply.read()
            return reply.status, time.perf_counter() - start
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code, time.perf_counter() - start
    except (urllib.error.URLError, ConnectionError, OSError):
        return None, time.perf_counter() - start


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def shape_metrics(metrics_port: int, model: str) -> tuple[float, float]:
    """(ganserve_compiled_shapes, ganserve_shape_evictions_total) of `model` from the server's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("ganserve_")}
    label = f'{{model="{model}"}}'
    return values.get(f"ganserve_compiled_shapes{label}", 0.0), values.get(f"ganserve_shape_evictions_total{label}", 0.0)


def padding_overhead(sizes: list[tuple[int, int]], multiple: int, tile: int) -> float:
    """Pixels run with buckets over pixels run without (padded to the multiple only), summed over `sizes`."""
    limit = on_grid(tile, 0, multiple)[0] if tile > 0 else 0
    bucketed = plain = 0
    for height, width in sizes:
        padded = pad_to_bucket(np.empty((1, 1, height, width), np.uint8), multiple, limit).shape
        bucketed += padded[2] * padded[3]
        plain += -(-height // multiple) * multiple * (-(-width // multiple) * multiple)
    return bucketed / plain


class Sampler:
    """The server's RSS and compiled-shape gauge once a second, from start() until stop()."""

    def __init__(self, pid: int, metrics_port: int, model: str) -> None:
        self.pid, self.metrics_port, self.model = pid, metrics_port, model
        self.samples: list[dict] = []
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                shapes, evictions = shape_metrics(self.metrics_port, self.model)
                self.samples.append({"t": round(time.monotonic() - self._t0, 1), "rss_mib": round(rss_mib(self.pid), 1),
                                     "compiled_shapes": shapes, "evictions": evictions})
            except (OSError, ValueError):
                pass
            if self._stop.wait(1.0):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def soak(repo: Path, model: str, seconds: float, sizes: list[tuple[int, int]], concurrency: int,
         extra: list[str]) -> dict:
    """Run the soak on a fresh server and summarise it."""
    pictures = [png(picture(h, w)) for h, w in sizes]
    child = start_subprocess(repo, extra, timeout=900)
    try:
        status, _ = post(child.http_port, model, png(picture(64, 64)))  # warm-up at a size outside the set
        if status != 200:
            raise SystemExit(f"warm-up request failed with HTTP {status}")
        sampler = Sampler(child.proc.pid, child.metrics_port, model)
        order = itertools.count()
        results: list[tuple[int | None, float]] = []
        deadline = time.monotonic() + seconds

        def client() -> None:
            while time.monotonic() < deadline:
                results.append(post(child.http_port, model, pictures[next(order) % len(pictures)]))

        sampler.start()
        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sampler.stop()
    finally:
        child.proc.terminate()
        child.proc.wait(60)
    return summarise(results, sampler.samples, seconds)


def summarise(results: list[tuple[int | None, float]], samples: list[dict], seconds: float) -> dict:
    """Requests, errors, latency and the RSS curve's start/mid/end, growth and second-half slope."""
    if not samples:
        raise SystemExit("no RSS sample was taken (the server's /metrics did not answer)")
    ok = [s for code, s in results if code == 200]
    first, last = samples[0], samples[-1]
    mid = min(samples, key=lambda s: abs(s["t"] - last["t"] / 2))
    half = [s for s in samples if s["t"] >= mid["t"]]
    slope = float(np.polyfit([s["t"] for s in half], [s["rss_mib"] for s in half], 1)[0]) * 60 if len(half) > 2 else 0.0
    return {
        "seconds": seconds, "requests": len(results), "ok": len(ok), "errors": len(results) - len(ok),
        "requests_per_s": round(len(results) / seconds, 2),
        "p50_ms": round(statistics.median(ok) * 1e3, 1) if ok else None,
        "p95_ms": round(float(np.percentile(ok, 95)) * 1e3, 1) if ok else None,
        "rss_start_mib": first["rss_mib"], "rss_mid_mib": mid["rss_mib"], "rss_end_mib": last["rss_mib"],
        "growth_mib": round(last["rss_mib"] - first["rss_mib"], 1),
        "growth_pct": round(100 * (last["rss_mib"] / first["rss_mib"] - 1), 2),
        "second_half_growth_mib": round(last["rss_mib"] - mid["rss_mib"], 1),
        "second_half_growth_pct": round(100 * (last["rss_mib"] / mid["rss_mib"] - 1), 2),
        "second_half_slope_mib_per_min": round(slope, 2),
        "compiled_shapes_max": max(s["compiled_shapes"] for s in samples),
        "compiled_shapes_end": last["compiled_shapes"], "evictions_end": last["evictions"],
        "samples": samples,
    }


def bucket_cost(repo: Path, model: str, card: ModelCard, repeats: int, extra: list[str]) -> list[dict]:
    """Whole-image latency and network pixels per side, with --buckets and without (the default)."""
    multiple = max(1, card.spatial_multiple)
    rows = []
    for mode, flags in (("buckets", ["--buckets"]), ("no buckets", [])):
        child = start_subprocess(repo, [*extra, *flags], timeout=900)
        try:
            for side in COST_SIDES:
                data = png(picture(side, side))
                first_code, first_s = post(child.http_port, model, data, "?tile_size=0", timeout=600)
                times = [post(child.http_port, model, data, "?tile_size=0", timeout=600) for _ in range(repeats)]
                network = bucket_size(side, multiple) if mode == "buckets" else -(-side // multiple) * multiple
                row = {"mode": mode, "side": side, "network_side": network,
                       "padded_pixels_pct": round(100 * (network * network / (side * side) - 1), 1),
                       "first_ms": round(first_s * 1e3, 1),
                       "p50_ms": round(statistics.median(s for _, s in times) * 1e3, 1),
                       "errors": sum(code != 200 for code, _ in [(first_code, first_s), *times])}
                print(f"[shapes] {json.dumps(row)}", flush=True)
                rows.append(row)
        finally:
            child.proc.terminate()
            child.proc.wait(60)
    return rows


def markdown(doc: dict) -> str:
    """The report's Markdown."""
    info = doc["machine"]
    lines = [f"# {doc['model']}: {doc['mode']} ({doc['label'] or 'run'})", "",
             f"CPU: {info['cpu_model']}, {info['logical_cpus']} logical CPUs", "", f"Command: `{doc['command']}`", ""]
    if doc["mode"] == "soak":
        s = doc["soak"]
        padding = ("not tile-safe: served at its exact shapes" if doc["bucket_overhead_pct"] is None else
                   f"bucket padding adds {doc['bucket_overhead_pct']:+.1f}% pixels to these pictures (tile "
                   f"{DEFAULT_TILE}: axes longer than it are not bucketed)")
        lines += [f"{doc['sizes']} distinct sizes, concurrency {doc['concurrency']}, {s['seconds']:.0f} s; {padding}",
                  "",
                  "| requests | errors | req/s | p50 | p95 | RSS start | RSS mid | RSS end | growth | second half | "
                  "slope (2nd half) | compiled shapes (max) | rebuilds |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
                  f"| {s['requests']} | {s['errors']} | {s['requests_per_s']} | {s['p50_ms']} ms | {s['p95_ms']} ms | "
                  f"{s['rss_start_mib']:.0f} MiB | {s['rss_mid_mib']:.0f} MiB | {s['rss_end_mib']:.0f} MiB | "
                  f"{s['growth_mib']:+.1f} MiB ({s['growth_pct']:+.1f}%) | {s['second_half_growth_mib']:+.1f} MiB "
                  f"({s['second_half_growth_pct']:+.1f}%) | {s['second_half_slope_mib_per_min']:+.1f} MiB/min | "
                  f"{s['compiled_shapes_max']:.0f} | {s['evictions_end']:.0f} |"]
    else:
        lines += ["| mode | side | network side | padded pixels | first request | p50 | errors |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['mode']} | {r['side']} | {r['network_side']} | {r['padded_pixels_pct']:+.1f}% | "
                  f"{r['first_ms']} ms | {r['p50_ms']} ms | {r['errors']} |" for r in doc["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.soak_shapes", description=__doc__.splitlines()[0])
    p.add_argument("--repo", type=Path, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--seconds", type=float, default=150.0)
    p.add_argument("--sizes", type=int, default=300, help="distinct picture sizes, cycled through")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bucket-cost", action="store_true", help="measure bucket padding's cost instead of a soak")
    p.add_argument("--repeats", type=int, default=10, help="--bucket-cost: timed requests per side")
    p.add_argument("--server-arg", action="append", default=[], help="an extra `ganserve serve` argument")
    p.add_argument("--label", default="", help="a name for this run in the report (e.g. before/after)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/shapes"))
    args = p.parse_args(argv)
    folder = args.repo / args.model
    if not folder.is_dir():
        print(f"error: {folder}: no such model folder", file=sys.stderr)
        return 2
    card = ModelCard.load(folder / CARD_FILE)
    if args.bucket_cost and not card.tile_safe:
        print(f"error: {args.model} is not tile-safe: the server never pads it to buckets", file=sys.stderr)
        return 2
    info = cpu_info()
    print(f"[shapes] {info['cpu_model']} ({info['logical_cpus']} logical CPUs; {', '.join(info['isa'])}); "
          f"{args.model}", flush=True)
    doc = {"machine": info, "model": args.model, "label": args.label, "command": " ".join(sys.argv),
           "server_args": args.server_arg, "mode": "bucket cost" if args.bucket_cost else "soak"}
    with tempfile.TemporaryDirectory() as tmp:  # a repository of the one model
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / args.model).symlink_to(folder.resolve())
        if args.bucket_cost:
            doc["rows"] = bucket_cost(repo, args.model, card, args.repeats, args.server_arg)
        else:
            sizes = distinct_sizes(args.sizes, args.seed)
            overhead = padding_overhead(sizes, max(1, card.spatial_multiple), DEFAULT_TILE) if card.tile_safe else None
            doc.update(sizes=args.sizes, concurrency=args.concurrency, seed=args.seed,
                       bucket_overhead_pct=None if overhead is None else round(100 * (overhead - 1), 1))
            doc["soak"] = soak(repo, args.model, args.seconds, sizes, args.concurrency, args.server_arg)
            print(f"[shapes] {json.dumps({k: v for k, v in doc['soak'].items() if k != 'samples'})}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{'cost' if args.bucket_cost else 'soak'}-{args.model}{'-' + args.label if args.label else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(doc))
    print(f"[shapes] wrote {args.out / stem}.json and .md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
