"""`ganserve train MODEL ...`: config from defaults, a YAML/JSON file and --set/typed flags, then the trainer."""

from __future__ import annotations

import argparse
import os
from typing import Any

from training import registry
from training.config import parse_set


def add_commands(subparsers: Any, name: str) -> None:
    """Add the ``train`` subcommand (models listed in --help)."""
    models = registry.available()
    p = subparsers.add_parser(
        name,
        help="train a registered model",
        description=(
            f"Train a registered model ({', '.join(models)}). Config = the model's defaults, then --config FILE, "
            "then --set key=value and the typed flags. Writes OUT/checkpoint.pt, OUT/metrics.jsonl, "
            "OUT/samples/step_XXXXXX.png and OUT/eval.json."
        ),
    )
    p.add_argument("model", metavar="MODEL", choices=models, help=f"one of: {', '.join(models)}")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of config values")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override one config value")
    p.add_argument("--steps", type=int, help="number of training steps (total, counting resumed ones)")
    p.add_argument("--budget-minutes", type=float, help="stop after this much wall time (this invocation)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, help="config seed")
    p.add_argument("--data-dir", metavar="DIR", help="folder of HR images (config data_dir); default built-in photos")
    p.add_argument("--vgg-weights", metavar="FILE", help="torchvision-format VGG19 weights (config vgg_weights)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Resolve the config and train; print the checkpoint path."""
    from training.trainer import train

    overrides: dict[str, Any] = parse_set(args.set)
    for flag, key in (("seed", "seed"), ("data_dir", "data_dir"), ("vgg_weights", "vgg_weights")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    path = train(
        args.model,
        overrides,
        steps=args.steps,
        budget_minutes=args.budget_minutes,
        out_dir=args.out,
        resume=args.resume,
        config_file=args.config,
        progress=not args.no_progress,
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(path)
    return 0
