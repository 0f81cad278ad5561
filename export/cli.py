"""`ganserve export CHECKPOINT --repo DIR ...`: the command-line face of export.exporter.export_checkpoint."""

from __future__ import annotations

import argparse

from pathlib import Path

from ganserve.core.contract import CARD_FILE, ModelCard
from ganserve.core.errors import CheckpointError, GanserveError
from ganserve.core.precisions import EXPORT_PRECISIONS, VARIANT_PRECISIONS
from ganserve.core.quality import PSNR_DROP_DB
from ganserve.core.shipped import entry_checkpoint, read_entry
from ganserve.export.defaults import DEFAULT_OPSET


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _variants(text: str) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    bad = [v for v in values if v not in VARIANT_PRECISIONS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown variant(s) {bad}; choose from {', '.join(VARIANT_PRECISIONS)}")
    return values


def _names(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))


def add_commands(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Add the `export` subcommand."""
    p = subparsers.add_parser(
        name,
        help="export a checkpoint to a verified ONNX model repository",
        description="Rebuild the model in CHECKPOINT, export it to ONNX, prove parity with PyTorch, and write "
        "<repo>/<name>/{config.pbtxt, model_card.json, <version>/model.onnx, <version>/reference.npz} atomically.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="a checkpoint written by `ganserve train`, or a shipped model folder (models/NAME)")
    p.add_argument("--repo", required=True, metavar="DIR", help="model repository folder (created if missing)")
    p.add_argument("--name", help="model name in the repository (default: the checkpoint's model name)")
    p.add_argument("--version", type=_positive, metavar="N", help="version number (default: the next free one)")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS, default="fp32", help="weights/compute precision (default fp32)")
    p.add_argument("--opset", type=_positive, default=DEFAULT_OPSET, metavar="N", help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.add_argument("--variants", type=_variants, default=(), metavar="P[,P]",
                   help="also write faster variants beside the fp32 model (int8, fp16) as <version>/model.<P>.onnx; "
                        "the server picks among them per machine, checked against the reference set")
    p.add_argument("--providers", type=_names, default=None, metavar="P[,P]",
                   help="onnxruntime providers that measure faster precisions, tried in order until one runs the "
                        "graph (cpu, openvino; default: cpu,openvino, those installed)")
    failing = p.add_mutually_exclusive_group()
    failing.add_argument("--allow-failing-variants", action="store_true",
                         help="write a variant (or a --precision other than fp32) even when it fails the server's "
                              "quality rule on the reference set (PSNR drop > "
                              f"{PSNR_DROP_DB} dB, a local artifact, a changed top-1, or an error past the tolerance)")
    failing.add_argument("--drop-failing-variants", action="store_true",
                         help="leave out a variant that fails the quality rule (the card says why) instead of "
                              "refusing the export: how the shipped models and `ganserve demo` export")
    p.add_argument("--int8-methods", type=_names, default=("qdq",), metavar="M[,M]",
                   help="int8 quantizers to try (qdq: onnxruntime's static QDQ; nncf: NNCF post-training "
                        "quantization); with several, the fastest that passes the quality rule is kept (default qdq)")
    p.add_argument("--half-io", action="store_true", help="fp16 only: take and return float16 (default: float32 I/O)")
    p.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config value of the checkpoint's model before export, e.g. export_direction=ba")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, then print the version folder and the figures that matter."""
    if args.half_io and args.precision != "fp16":
        raise GanserveError("--half-io applies to --precision fp16 only")
    from ganserve.training.config import parse_set

    options = parse_set(args.option)
    if Path(args.checkpoint).is_dir():  # a shipped entry: its checkpoint, name and recorded options
        card = read_entry(args.checkpoint)
        options = {**card.get("options", {}), **options}
        args.name = args.name or Path(args.checkpoint).resolve().name
        args.checkpoint = str(entry_checkpoint(args.checkpoint))
    if not Path(args.checkpoint).is_file():
        raise CheckpointError(f"{args.checkpoint}: no such checkpoint file")
    from ganserve.export.exporter import export_checkpoint

    out = export_checkpoint(
        args.checkpoint, args.repo,
        name=args.name, version=args.version, precision=args.precision, opset=args.opset,
        overwrite=args.overwrite, keep_io_fp32=not args.half_io, variants=args.variants, providers=args.providers,
        allow_failing_variants=args.allow_failing_variants, drop_failing_variants=args.drop_failing_variants,
        int8_methods=args.int8_methods, progress=not args.quiet,
        options=options or None,
    )
    card = ModelCard.load(out.parent / CARD_FILE)
    key = card.metrics.get("quality_key")
    quality = f", {key} {card.metrics[key]:.4g}" if key in card.metrics else ""
    print(f"{out}  ({card.precision}, max abs error vs torch {card.parity['max_abs_error']:.3g}{quality})")
    for facts in card.parity.get("variants", {}).values():
        method = f" ({facts['method']} of {', '.join(m['method'] for m in facts['methods'])})" if "methods" in facts else ""
        print(f"  {facts['file']}{method}: measured on {facts['provider'].removesuffix('ExecutionProvider')}, max abs "
              f"error {facts['max_abs_error']:.3g}; {facts['quality']['figures']}")
    for variant, why in card.parity.get("variants_dropped", {}).items():
        print(f"  {variant} not written: it {why}")
    return 0
