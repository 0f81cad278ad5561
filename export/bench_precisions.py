"""Precision table for the README: export fp32/fp16/int8 of one checkpoint and measure each on this CPU.

    python -m ganserve.export.bench_precisions CHECKPOINT [--sizes 64 256] [--repeats 10] [--repo DIR]

Per precision: max abs error vs torch and held-out quality (both from the export's model card), model.onnx size,
and onnxruntime CPU p50 latency at batch 1 for each square input size (a precision the CPU provider cannot run is
timed on the provider the export measured it on, named in its row). Prints a Markdown table naming the CPU.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ganserve.core.contract import MODEL_FILE, ModelCard
from ganserve.core.errors import GanserveError
from ganserve.core.precisions import EXPORT_PRECISIONS
from ganserve.core.onnxruntime_facts import CPU
from ganserve.export.predictors import ort_session

CELL_BUDGET_S = 15.0  # stop timing one cell after this long (at least 3 runs), so big inputs stay bounded


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (figures are only comparable on the same CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _inputs(card: ModelCard, size: int) -> dict[str, np.ndarray] | None:
    """Batch-1 inputs with every dynamic axis set to `size`; None when a fixed-size model cannot take it."""
    rng = np.random.default_rng(0)
    feed = {}
    for t in card.inputs:
        if -1 not in t.shape and t.shape[-2:] != [size, size]:
            return None
        shape = [1] + [size if d == -1 else d for d in t.shape]
        lo, hi = t.value_range or (0.0, 1.0)
        arr = rng.uniform(lo, hi, size=shape) if np.dtype(t.numpy_dtype).kind == "f" else np.zeros(shape)
        feed[t.name] = arr.astype(t.numpy_dtype)
    return feed


def p50_ms(model_path: Path, feed: dict[str, np.ndarray], repeats: int, provider: str = CPU) -> tuple[float, int]:
    """Median wall time of session.run in ms after two warm-up runs; (p50, runs timed)."""
    sess = ort_session(model_path.read_bytes(), provider=provider)
    for _ in range(2):
        sess.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < CELL_BUDGET_S):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times), len(times)


def bench(checkpoint: str | Path, repo: Path, sizes: list[int], repeats: int, progress: bool = True) -> list[dict[str, Any]]:
    """Export each precision as its own version of one model in `repo`, then measure it; one row per precision."""
    from ganserve.export.exporter import export_checkpoint, read_card

    rows = []
    for version, precision in enumerate(EXPORT_PRECISIONS, start=1):
        out = export_checkpoint(checkpoint, repo, name="bench", version=version, precision=precision, progress=progress)
        card = read_card(out)
        key = card.metrics.get("quality_key", "")
        row: dict[str, Any] = {
            "precision": precision,
            "provider": card.parity.get("provider", CPU),  # the one the export measured it on (CPU unless it cannot)
            "max_abs_error": card.parity["max_abs_error"],
            "quality_key": key,
            "quality": card.metrics.get(key),
            "delta": card.metrics.get("quality_delta_vs_fp32", 0.0 if key else None),
            "size_mb": (out / MODEL_FILE).stat().st_size / 1e6,
            "architecture": card.architecture,
            "baselines": {k: v for k, v in card.metrics.items() if isinstance(v, float) and ("bicubic" in k or "chance" in k)},
        }
        for size in sizes:
            feed = _inputs(card, size)
            row[f"p50_{size}"] = p50_ms(out / MODEL_FILE, feed, repeats, row["provider"]) if feed is not None else None
        rows.append(row)
    return rows


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _ms(value: float) -> str:
    """Milliseconds with one decimal, or three significant digits below 1 ms (tiny models on a fast CPU run in
    microseconds, which one decimal would print as 0.0)."""
    return f"{value:.1f}" if value >= 1.0 else f"{value:.3g}"


def markdown(rows: list[dict[str, Any]], sizes: list[int], cpu: str) -> str:
    """The README table: one line per precision, latencies as p50 ms (runs timed)."""
    key = rows[0]["quality_key"] or "quality"
    head = ["precision", "max abs error vs torch", f"held-out {key}", "Δ vs fp32", "model.onnx"]
    head += [f"ORT CPU p50 {s}×{s}" for s in sizes]
    lines = [f"{rows[0]['architecture']}, onnxruntime CPU provider, batch 1, on {cpu}:", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        where = "" if r.get("provider", CPU) == CPU else f" ({r['provider'].removesuffix('ExecutionProvider')})"
        cells = [r["precision"] + where, _num(r["max_abs_error"], ".2e"), _num(r["quality"], ".3f"), _num(r["delta"], "+.3f"),
                 f"{r['size_mb']:.2f} MB"]
        cells += ["n/a" if r[f"p50_{s}"] is None else f"{_ms(r[f'p50_{s}'][0])} ms ({r[f'p50_{s}'][1]} runs)" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    if rows[0]["baselines"]:
        lines += ["", "Baselines: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[0]["baselines"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: export into a temp repository (or --repo) and print the table."""
    p = argparse.ArgumentParser(prog="python -m ganserve.export.bench_precisions", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="square input sizes (default 64 256)")
    p.add_argument("--repeats", type=int, default=10, help=f"timed runs per cell (fewer after {CELL_BUDGET_S:.0f} s)")
    p.add_argument("--repo", type=Path, help="keep the exported repository here (default: a temp dir)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="ganserve-bench-") as tmp:
            repo = args.repo or Path(tmp) / "repo"
            rows = bench(args.checkpoint, repo, args.sizes, max(1, args.repeats), progress=not args.quiet)
    except GanserveError as exc:
        print(f"bench_precisions: error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows, args.sizes, cpu_model()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
