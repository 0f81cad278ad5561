"""In-process int8 against the int8 rate the same runtime reaches on a plain convolution stack, per model.

    python -m ganserve.benchmarks.int8_rate [--repo models] [--models srresnet,pix2pix,...] [--size 256]
        [--repeats 5] [--out benchmarks/results/int8]

The ceiling: ten 3x3 convolutions with ReLU at 48, 64 and 128 channels (the best of the three), at the same input size, quantized by the export's own QDQ
quantizer and run on OpenVINO (its fp32 inference hint, as the server asks): the int8 rate OpenVINO reaches on this
CPU when nothing but convolutions stand in its way. Then each model's fp32 model.onnx and int8 model.int8.onnx from
the repository at the same size, batch 1: p50 ms, GOP/s (multiply-add = 2 ops, counted from the graph) and the share
of the ceiling (best run against best run). Operations are counted from the exported graph, so a rewrite that adds
structurally zero taps (SRResNet's phase tail, about 4 % of its operations) counts them. Prints the CPU first;
writes report.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ganserve.benchmarks.flops import count_flops
from ganserve.benchmarks.loadgen import timed_loop
from ganserve.benchmarks.onnx_files import provider_session
from ganserve.core.contract import MODEL_FILE, variant_file
from ganserve.core.machine import cpu_info, describe
from ganserve.core.onnxruntime_facts import OPENVINO, typical_feeds
from ganserve.core.shipped import shipped_dir

STACK_DEPTH, STACK_CHANNELS = 10, 64
CEILING_CHANNELS = (48, 64, 128)  # the stack at each width; the ceiling is the best rate of any of them


def conv_stack(channels: int = STACK_CHANNELS, depth: int = STACK_DEPTH, seed: int = 0) -> onnx.ModelProto:
    """x (1, C, H, W) -> depth x (3x3 Conv + ReLU), He-initialised so activations keep their scale."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((channels, channels, 3, 3)) * np.sqrt(2 / (9 * channels))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(channels, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev = f"r{i}"
    dims = [1, channels, "H", "W"]
    graph = helper.make_graph(nodes, "conv_stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, dims)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # what ORT 1.24 reads


def _session(model: bytes) -> ort.InferenceSession:
    """OpenVINO with the fp32 hint, as the server asks (CPU behind it)."""
    return provider_session(model, OPENVINO, "fp32")


def timed_ms(session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int) -> tuple[float, float]:
    """(p50, best) of `repeats` runs after two warm-ups, in ms. Rates use the best run of each side: a peak against
    a peak, the least moved by other work on a shared machine."""
    times, _ = timed_loop(lambda: session.run(None, feeds), requests=repeats)
    return float(np.median(times)) * 1e3, float(np.min(times)) * 1e3


def stack_rates(channels: int, size: int, repeats: int) -> dict[str, float]:
    """One conv stack's fp32 and int8 rates on OpenVINO at size x size (best run)."""
    from ganserve.export.variants import to_int8

    fp32 = conv_stack(channels)
    rng = np.random.default_rng(1)
    calibration = lambda: ({"x": rng.random((1, channels, 32, 32), dtype=np.float32)} for _ in range(8))  # noqa: E731
    int8 = to_int8(fp32, calibration)
    feeds = {"x": np.random.default_rng(2).random((1, channels, size, size), dtype=np.float32)}
    ops = 2 * STACK_DEPTH * channels * channels * 9 * size * size
    out = {"channels": channels, "ops": ops}
    for name, model in (("fp32", fp32), ("int8", int8)):
        p50, best = timed_ms(_session(model.SerializeToString()), feeds, repeats)
        out[f"{name}_ms"], out[f"{name}_best_ms"], out[f"{name}_gops"] = p50, best, ops / best / 1e6
    return out


def ceiling(size: int, repeats: int) -> dict[str, object]:
    """The best fp32 and int8 rates of the conv stack over CEILING_CHANNELS widths, and every width's figures."""
    stacks = [stack_rates(c, size, repeats) for c in CEILING_CHANNELS]
    return {"fp32_gops": max(s["fp32_gops"] for s in stacks), "int8_gops": max(s["int8_gops"] for s in stacks),
            "stacks": stacks}


def model_rates(folder: Path, size: int, repeats: int) -> dict[str, object] | None:
    """fp32 and int8 of one repository model at size x size on OpenVINO: p50 ms and GOP/s."""
    version = max((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name),
                  default=None)
    if version is None or not (version / variant_file("int8")).is_file():
        return None
    session = _session((version / MODEL_FILE).read_bytes())
    feeds = typical_feeds(session.get_inputs(), size)
    with tempfile.TemporaryDirectory() as tmp:  # count_flops reads a path
        path = Path(tmp, "m.onnx")
        path.write_bytes((version / MODEL_FILE).read_bytes())
        ops = count_flops(path, {k: list(v.shape) for k, v in feeds.items()})
    row: dict[str, object] = {"model": folder.name, "ops": ops}
    for name, file in (("fp32", MODEL_FILE), ("int8", variant_file("int8"))):
        p50, best = timed_ms(_session((version / file).read_bytes()), feeds, repeats)
        row[f"{name}_ms"], row[f"{name}_best_ms"], row[f"{name}_gops"] = p50, best, ops / best / 1e6
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganserve.benchmarks.int8_rate", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=shipped_dir(), help="model repository (default: the shipped models)")
    p.add_argument("--models", default="", help="comma-separated names (default: every model with an int8 variant)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/int8"))
    args = p.parse_args(argv)
    if OPENVINO not in ort.get_available_providers():
        print("int8_rate: needs the OpenVINO flavour (make setup ORT=openvino)", file=sys.stderr)
        return 2
    cpu = describe()
    print(f"CPU: {cpu}\nISA: {' '.join(cpu_info()['isa'])}", flush=True)
    top = ceiling(args.size, args.repeats)
    for st in top["stacks"]:
        print(f"conv stack {st['channels']} channels {args.size}²: fp32 {st['fp32_gops']:.0f} GOP/s, int8 "
              f"{st['int8_gops']:.0f} GOP/s", flush=True)
    names = [n for n in args.models.split(",") if n] or sorted(p.name for p in args.repo.iterdir() if p.is_dir())
    rows = []
    for name in names:
        row = model_rates(args.repo / name, args.size, args.repeats)
        if row is None:
            continue
        row["int8_share_of_ceiling"] = row["int8_gops"] / top["int8_gops"]
        rows.append(row)
        print(f"{name}: fp32 {row['fp32_ms']:.1f} ms, int8 {row['int8_ms']:.1f} ms ({row['int8_gops']:.0f} GOP/s, "
              f"{row['int8_share_of_ceiling']:.0%} of the ceiling)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"cpu": cpu, "size": args.size, "repeats": args.repeats, "ceiling": top, "models": rows}
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# int8 against the conv-stack ceiling, {args.size}², batch 1, OpenVINO", "", f"CPU: {cpu}", "",
             f"Ceiling: {STACK_DEPTH} x (3x3 conv + ReLU) at widths {', '.join(map(str, CEILING_CHANNELS))}, the best "
             f"of each: fp32 {top['fp32_gops']:.0f} GOP/s, int8 {top['int8_gops']:.0f} GOP/s ("
             + ", ".join(f"{st['channels']} ch: {st['int8_gops']:.0f}" for st in top["stacks"]) + " int8)",
             "", "| model | GOP per run | fp32 p50 | int8 p50 | int8 / fp32 speed (p50) | int8 GOP/s (best) | share of the int8 "
             "ceiling |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['ops'] / 1e9:.1f} | {r['fp32_ms']:.1f} ms | {r['int8_ms']:.1f} ms | "
                     f"{r['fp32_ms'] / r['int8_ms']:.2f}x | {r['int8_gops']:.0f} | {r['int8_share_of_ceiling']:.0%} |")
    (args.out / "report.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/report.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
