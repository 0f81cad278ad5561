"""`ganserve bench`: flags map one-to-one onto benchmarks.bench.BenchConfig."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ganserve.core.cli_args import count, duration
from ganserve.core.cli_args import int_list as _int_list
from ganserve.core.errors import GanserveError

PATHS = ("torch", "ort", "ort-candidates", "openvino-native", "modes", "codecs", "oip-raw", "grpc-floor", "image-api",
         "tritonclient-aio", "http-raw", "http-image", "peer-torchserve", "peer-torchserve-batch8", "peer-litserve")


int_list = _int_list(1)  # argparse type: comma-separated positive integers (sizes, batches, concurrencies)


def _paths(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in PATHS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown path(s) {bad}; choose from {', '.join(PATHS)}")
    return values


def add_commands(subparsers: argparse._SubParsersAction, name: str) -> None:
    p = subparsers.add_parser(name, help="measure latency and throughput side by side",
                              description="Torch eager vs in-process onnxruntime vs the served paths (OIP raw "
                                          "tensors, image API, tritonclient) vs peer servers (TorchServe, "
                                          "LitServe), in one run.")
    p.add_argument("--repo", type=Path, required=True, help="model repository written by `ganserve export`")
    p.add_argument("--model", required=True,
                   help="model name in the repository, several comma-separated, or 'all' (every image model)")
    p.add_argument("--sizes", type=int_list, default=[64, 128, 256], help="square input sizes (default 64,128,256)")
    p.add_argument("--batch", type=int_list, default=[1, 4], help="batch sizes for in-process and OIP paths (default 1,4)")
    p.add_argument("--concurrency", type=int_list, default=[1, 2, 4, 8, 16], help="in-flight requests (default 1,2,4,8,16)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--duration", type=duration(positive=True), default=None,
                        help="seconds per configuration (default 3)")
    amount.add_argument("--requests", type=count(1), default=None,
                        help="requests per configuration instead of a duration")
    p.add_argument("--out", type=Path, default=None, help="report folder (default benchmarks/results/<stamp>)")
    p.add_argument("--checkpoint", type=Path, default=None, help="training checkpoint for torch eager and the peer")
    p.add_argument("--paths", type=_paths, default=list(PATHS), help=f"subset of {','.join(PATHS)}")
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for `ganserve serve` (repeatable)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ganserve.benchmarks.bench import BenchConfig, image_models, run_bench, run_bench_models

    if not args.repo.is_dir():
        raise GanserveError(f"{args.repo}: model repository not found")
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise GanserveError(f"{args.checkpoint}: checkpoint not found")
    names = image_models(args.repo) if args.model == "all" else [m.strip() for m in args.model.split(",") if m.strip()]
    missing = [m for m in names if not (args.repo / m).is_dir()]
    if not names or missing:
        raise GanserveError(f"{args.repo}: no model {', '.join(missing) or args.model!r} to bench")
    if len(names) > 1 and args.checkpoint is not None:
        raise GanserveError("--checkpoint names one model's checkpoint; with several models each one's own is used")
    cfg = BenchConfig(repo=args.repo, model=names[0], sizes=args.sizes, batches=args.batch,
                      concurrency=args.concurrency, duration=args.duration, requests=args.requests, out=args.out,
                      checkpoint=args.checkpoint, paths=args.paths, server_args=args.server_arg,
                      command="ganserve " + shlex.join(sys.argv[1:]))
    if len(names) > 1:
        _, files = run_bench_models(cfg, names)
        print(files["markdown"].read_text())
        for kind, path in files.items():
            print(f"{kind}: {path}")
        return 0
    doc, files = run_bench(cfg)
    print(files["markdown"].read_text())
    for kind, path in files.items():
        print(f"{kind}: {path}")
    return 0
