"""The `ganserve` command line: one tool, one subcommand per stage.

Each stage registers its own subcommands (``add_commands(subparsers)``) and is imported lazily, so
`ganserve serve` never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ganserve.core.errors import GanserveError

# subcommand -> module that defines add_commands(subparsers); imported only when that command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("ganserve.training.cli", "train a registered model (SRResNet/SRGAN, ...)"),
    "ship": ("ganserve.pipeline.ship", "evaluate a trained checkpoint and add it to the shipped models (models/)"),
    "import": ("ganserve.pipeline.importer", "import weights trained elsewhere (ESRGAN, BasicSR, CycleGAN, pix2pix)"),
    "export": ("ganserve.export.cli", "export a checkpoint to a verified ONNX model repository"),
    "serve": ("ganserve.serving.cli", "serve a model repository over gRPC"),
    "client": ("ganserve.serving.cli", "call a running server (image API)"),
    "bench": ("ganserve.benchmarks.cli", "measure latency and throughput side by side"),
    "demo": ("ganserve.pipeline.demo", "the main job: train or reuse, export, serve, request, report"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="ganserve", description="Train, export and serve GAN image models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        if name == wanted:
            importlib.import_module(module).add_commands(sub, name)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        rc = args.func(args)
    except GanserveError as exc:
        print(f"ganserve {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ganserve {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
