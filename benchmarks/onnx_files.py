"""In-process latency of ONNX files side by side: each file on each provider, batch 1, square inputs.

    python -m ganserve.benchmarks.onnx_files A.onnx B.onnx ... [--sizes 64 256] [--providers cpu,openvino]
        [--precision fp32] [--repeats 10] [--out benchmarks/results/onnx_files]

For comparing two exports of one model (say, before and after a graph rewrite, or two int8 quantizations): every
file gets a fresh session per provider with the server's own provider options (OpenVINO with the inference-precision
hint of --precision and no CPU pinning), two warm-up runs, then the p50 of --repeats runs per size on one random
image (seeded). The first file's outputs are the reference: each row gives the max abs difference to it on that
input. Prints the CPU first; writes report.md and report.json to --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ganserve.core.machine import cpu_info, describe
from ganserve.core.errors import described
from ganserve.core.onnxruntime_facts import CPU, OPENVINO, PROVIDER_NAMES, openvino_options, typical_feeds


def provider_session(model: Path | bytes, provider: str, precision: str) -> ort.InferenceSession:
    """A session on `provider` with the server's options for `precision` (OpenVINO's hint), the CPU one behind it."""
    options = openvino_options(precision) if provider == OPENVINO else {}
    fallback = [] if provider == CPU else [CPU]  # ops the provider lacks run on the CPU one, as in serving
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                providers=[(provider, options), *fallback])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.onnx_files", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    p.add_argument("--providers", default="cpu,openvino", help="short names, comma-separated (default cpu,openvino)")
    p.add_argument("--precision", default="fp32", help="the OpenVINO inference hint (fp32 or bf16; default fp32)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_files"))
    args = p.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    providers = [PROVIDER_NAMES.get(name.strip().lower(), name.strip()) for name in args.providers.split(",")]
    providers = [name for name in providers if name in ort.get_available_providers()]
    print(f"CPU: {describe()}; onnxruntime {ort.__version__}; providers {', '.join(providers)}", flush=True)
    rows = []
    for provider in providers:
        reference: dict[int, list[np.ndarray]] = {}
        for path in args.files:
            row = {"file": str(path), "provider": provider, "p50_ms": {}, "max_abs_diff": {}, "error": ""}
            try:
                _time(path, provider, args, row, reference)
            except Exception as exc:  # noqa: BLE001  (a provider that cannot run a file is a row, not the end)
                row["error"] = described(exc, 160)
            print(f"{provider} {path}: " + (row["error"] or ", ".join(
                f"{s}²: {row['p50_ms'][s]} ms (max diff {row['max_abs_diff'][s]:.3g})" for s in args.sizes)), flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": cpu_info(), "command": " ".join(sys.argv), "precision_hint": args.precision, "rows": rows}
    (args.out / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [f"CPU: {describe()}", "", "| provider | file | " + " | ".join(f"{s}² p50 (max diff)" for s in args.sizes)
             + " |", "|---|---|" + "---|" * len(args.sizes)]
    for row in rows:
        cells = [f"failed: {row['error']}"] * len(args.sizes) if row["error"] else [
            f"{row['p50_ms'][s]} ms ({row['max_abs_diff'][s]:.3g})" for s in args.sizes]
        lines.append(f"| {row['provider']} | {row['file']} | " + " | ".join(cells) + " |")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'report.md'}")
    return 0


def _time(path: Path, provider: str, args: argparse.Namespace, row: dict, reference: dict) -> None:
    """Fill `row` with the file's p50 and its max difference to the first file, per size."""
    session = provider_session(path, provider, args.precision)
    for side in args.sizes:
        feeds = typical_feeds(session.get_inputs(), side, seed=side)
        for _ in range(2):
            outputs = session.run(None, feeds)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append((time.perf_counter() - start) * 1000)
        row["p50_ms"][side] = round(statistics.median(times), 2)
        first = reference.setdefault(side, outputs)
        row["max_abs_diff"][side] = float(max(np.abs(a.astype(np.float64) - b).max() for a, b in zip(outputs, first)))


if __name__ == "__main__":
    sys.exit(main())
