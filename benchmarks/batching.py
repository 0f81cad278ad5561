"""Benchmark dynamic batching and tiling in-process: throughput with vs without batching, and peak RSS of tiling.

Part 1 drives one ONNX SR model through ``serving.batcher.Batcher`` with closed-loop clients at concurrency 1, 4
and 16 on 64x64 inputs, once with batching disabled (each request its own run, same queue and worker) and once
enabled, alternating the two in rounds so drifting machine load hits both alike. Part 2 super-resolves one
1024x1024 image in a fresh subprocess per mode (untiled: one run; tiled: ``serving.tiling.run_tiled`` through a
batcher) and reads the child's peak RSS (ru_maxrss). It prints figures; it asserts nothing.

Without ``--model`` it builds an SR-like model with onnx.helper: a 3x3 head conv, ``--blocks`` residual blocks of
two 3x3 convs (PReLU) at ``--channels`` channels, two conv + DepthToSpace x2 stages (x4 in all) and a 3x3 tail
conv with tanh; fixed random weights. The defaults (32 channels, 4 blocks, ~2.3 GFLOP per 64x64 image) keep the run
under two minutes; ``--channels 64 --blocks 16`` is SRResNet-sized (~18 GFLOP) but its untiled 1024x1024 run takes
minutes and over 10 GB, so pair it with ``--skip-memory``.

    .venv/bin/python -m ganserve.benchmarks.batching [--model path/to/model.onnx] [--seconds 3] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ganserve.benchmarks.flops import count_flops
from ganserve.benchmarks.peaks import describe
from ganserve.serving.batcher import Batcher, BatchingConfig
from ganserve.serving.tiling import run_tiled


def build_sr_model(channels: int = 32, blocks: int = 4, seed: int = 0) -> onnx.ModelProto:
    """The built-in x4 SR-like model described in the module docstring (input "x", output "y", NCHW float32)."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = [numpy_helper.from_array(np.full((channels, 1, 1), 0.25, np.float32), "slope")]
    counter = iter(range(10_000))

    def node(op: str, inputs: list[str], **attrs: object) -> str:
        name = f"{op.lower()}{next(counter)}"
        nodes.append(helper.make_node(op, inputs, [name], **attrs))
        return name

    def conv(source: str, cin: int, cout: int) -> str:
        name = f"w{next(counter)}"
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(1.0 / (cin * 9))).astype(np.float32)
        weights.append(numpy_helper.from_array(w, name))
        weights.append(numpy_helper.from_array(np.zeros(cout, np.float32), name + "_b"))
        return node("Conv", [source, name, name + "_b"], pads=[1, 1, 1, 1])

    head = node("PRelu", [conv("x", 3, channels), "slope"])
    h = head
    for _ in range(blocks):
        inner = node("PRelu", [conv(h, channels, channels), "slope"])
        h = node("Add", [h, conv(inner, channels, channels)])
    h = node("Add", [head, conv(h, channels, channels)])
    for _ in range(2):
        h = node("PRelu", [node("DepthToSpace", [conv(h, channels, channels * 4)], blocksize=2), "slope"])
    nodes.append(helper.make_node("Tanh", [conv(h, channels, 3)], ["y"]))
    graph = helper.make_graph(
        nodes,
        "builtin_sr_x4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "OH", "OW"])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


class _Batches:
    """Observer counting runs and rows, for the mean batch size."""

    def __init__(self) -> None:
        self.runs = 0
        self.rows = 0

    def on_batch(self, model: str, batch_rows: int, queue_seconds: list[float]) -> None:
        self.runs += 1
        self.rows += batch_rows


@dataclass
class _Cell:
    """One table cell's totals over the rounds."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    batches: _Batches = field(default_factory=_Batches)

    def add(self, requests: int, seconds: float, latencies: list[float], batches: _Batches) -> None:
        self.requests += requests
        self.seconds += seconds
        self.latencies.extend(latencies)
        self.batches.runs += batches.runs
        self.batches.rows += batches.rows

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1e3

    @property
    def mean_rows(self) -> float:
        return self.batches.rows / max(1, self.batches.runs)


def _session(path: str, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _runner(session: ort.InferenceSession):
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def _model_facts(session: ort.InferenceSession, size: int) -> tuple[str, int, int, int]:
    """Input name, channels, scale and spatial multiple (metadata if present, else probed)."""
    meta = session.get_modelmeta().custom_metadata_map
    inp = session.get_inputs()[0]
    channels = inp.shape[1] if isinstance(inp.shape[1], int) else 3
    probe = session.run(None, {inp.name: np.zeros((1, channels, size, size), np.float32)})[0]
    scale = int(meta.get("ganserve.scale", probe.shape[-1] // size))
    return inp.name, channels, scale, int(meta.get("ganserve.spatial_multiple", 1))


async def _closed_loop(run, name: str, x: np.ndarray, config: BatchingConfig, concurrency: int, seconds: float):
    """Clients that each send the next request when the previous answer arrives, for ``seconds``."""
    batches = _Batches()
    batcher = Batcher(run, config, "bench", batches)
    latencies: list[float] = []
    stop_at = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            await batcher.submit({name: x})
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    await batcher.close()
    return len(latencies), elapsed, latencies, batches


def throughput(args: argparse.Namespace, path: str) -> None:
    """Part 1: requests/s without and with batching at each concurrency, in one process."""
    session = _session(path, args.threads)
    name, channels, _, _ = _model_facts(session, args.size)
    run = _runner(session)
    x = np.random.default_rng(0).uniform(-1, 1, (1, channels, args.size, args.size)).astype(np.float32)
    per_image = {}
    for rows in (1, args.max_batch_size):  # warm-up, then the bare ORT cost per image at both batch sizes
        feeds = {name: np.repeat(x, rows, axis=0)}
        run(feeds)
        began, repeats = time.perf_counter(), max(1, 8 // rows)
        for _ in range(repeats):
            run(feeds)
        per_image[rows] = (time.perf_counter() - began) / (repeats * rows) * 1e3
    print(f"\nBare ORT run, ms per image: batch 1 {per_image[1]:.0f}, batch {args.max_batch_size} "
          f"{per_image[args.max_batch_size]:.0f}")
    print(f"Throughput, {args.size}x{args.size} inputs, {args.seconds:g} s x {args.rounds} rounds per cell "
          f"(batching: max_batch_size {args.max_batch_size}, max_queue_delay_us {args.max_queue_delay_us}; "
          f"ORT intra-op threads {args.threads or 'default'}, workers {args.workers})")
    print("| concurrency | no batching req/s | batching req/s | ratio | mean batch rows | p50 ms off | p50 ms on |")
    print("|---|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        cells = {False: _Cell(), True: _Cell()}
        for _ in range(args.rounds):
            for enabled in (False, True):
                config = BatchingConfig(
                    max_batch_size=args.max_batch_size,
                    max_queue_delay_us=args.max_queue_delay_us,
                    max_queue_size=max(64, concurrency),
                    enabled=enabled,
                    workers=args.workers,
                )
                cells[enabled].add(*asyncio.run(_closed_loop(run, name, x, config, concurrency, args.seconds)))
        off, on = cells[False], cells[True]
        print(f"| {concurrency} | {off.rate:.2f} | {on.rate:.2f} | {on.rate / off.rate:.2f} | {on.mean_rows:.1f} "
              f"| {off.p50_ms:.0f} | {on.p50_ms:.0f} |")


def _vm_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(args: argparse.Namespace, path: str) -> None:
    """Run in a fresh process: super-resolve one image tiled or untiled and print peak RSS as JSON."""
    session = _session(path, args.threads)
    name, channels, scale, multiple = _model_facts(session, 64)
    run = _runner(session)
    image = np.random.default_rng(1).uniform(-1, 1, (1, channels, args.mem_size, args.mem_size)).astype(np.float32)
    before = _vm_rss_mib()
    began = time.perf_counter()
    if args.memory_child == "untiled":
        out = run({name: image})[session.get_outputs()[0].name]
    else:
        out_name = session.get_outputs()[0].name

        async def tiled() -> np.ndarray:
            batcher = Batcher(run, BatchingConfig(max_batch_size=args.max_batch_size), "bench")

            async def infer(tile: np.ndarray) -> np.ndarray:
                return (await batcher.submit({name: tile}))[out_name]

            try:
                return await run_tiled(image, infer, scale, args.tile, args.overlap, multiple)
            finally:
                await batcher.close()

        out = asyncio.run(tiled())
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": args.memory_child, "rss_before_mib": before, "peak_rss_mib": peak,
                      "seconds": seconds, "out_shape": list(out.shape), "out_mean": float(out.mean())}))


def memory(args: argparse.Namespace, path: str) -> None:
    """Part 2: peak RSS of untiled vs tiled super-resolution, each in a fresh subprocess."""
    print(f"\nPeak RSS, one {args.mem_size}x{args.mem_size} image, fresh process per mode "
          f"(tiled: tile {args.tile}, overlap {args.overlap}, through a batcher with max_batch_size "
          f"{args.max_batch_size})")
    print("| mode | output | RSS before run MiB | peak RSS MiB | seconds | output mean |")
    print("|---|---|---|---|---|---|")
    for mode in ("untiled", "tiled"):
        command = [sys.executable, "-m", "ganserve.benchmarks.batching", "--model", path, "--memory-child", mode,
                   "--mem-size", str(args.mem_size), "--tile", str(args.tile), "--overlap", str(args.overlap),
                   "--max-batch-size", str(args.max_batch_size), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {mode} | failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]} | | | | |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {mode} | {'x'.join(map(str, r['out_shape']))} | {r['rss_before_mib']:.0f} | "
              f"{r['peak_rss_mib']:.0f} | {r['seconds']:.1f} | {r['out_mean']:.5f} |")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="ONNX SR model (NCHW float32, dynamic batch/H/W); default: the built-in model")
    p.add_argument("--channels", type=int, default=32, help="built-in model width")
    p.add_argument("--blocks", type=int, default=4, help="built-in model residual blocks")
    p.add_argument("--size", type=int, default=64, help="input side for the throughput part")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--seconds", type=float, default=3.0, help="per cell per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating off/on rounds per concurrency")
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--workers", type=int, default=1, help="batcher workers (concurrent ORT runs)")
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = ORT's default)")
    p.add_argument("--mem-size", type=int, default=1024, help="image side for the memory part")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/batching"),
                   help="where the report (report.md, what is printed) goes (default benchmarks/results/batching)")
    p.add_argument("--memory-child", choices=["untiled", "tiled"], help=argparse.SUPPRESS)
    return p


class _Tee(io.StringIO):
    """What is printed, also kept for the report file."""

    def __init__(self, out) -> None:
        super().__init__()
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text)
        return super().write(text)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.memory_child:
        memory_child(args, args.model)
        return 0
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        _report(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text(tee.getvalue())
    print(f"wrote {args.out / 'report.md'}")
    return 0


def _report(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            path, what = args.model, args.model
        else:
            path = str(Path(tmp) / "builtin_sr_x4.onnx")
            onnx.save(build_sr_model(args.channels, args.blocks), path)
            what = f"built-in x4 SR-like model ({args.channels} channels, {args.blocks} residual blocks)"
        session = _session(path, args.threads)
        name, channels, scale, _ = _model_facts(session, args.size)
        gflop = count_flops(path, {name: [1, channels, args.size, args.size]}) / 1e9
        print(f"CPU: {describe()}; ORT {ort.__version__}; load average {os.getloadavg()[0]:.2f}")
        print(f"Model: {what}; x{scale}; {gflop:.2f} GFLOP per {args.size}x{args.size} image")
        del session
        if not args.skip_throughput:
            throughput(args, path)
        if not args.skip_memory:
            memory(args, path)
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
