"""`ganserve train MODEL ...`: config from defaults, a YAML/JSON file and --set/typed flags, then the trainer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ganserve.core.cli_args import count, duration, integer
from ganserve.core.errors import GanserveError
from ganserve.core.shipped import read_entry

from ganserve.training import registry
from ganserve.training.config import parse_set


def add_commands(subparsers: Any, name: str) -> None:
    """Add the ``train`` subcommand (models listed in --help)."""
    models = registry.available()
    p = subparsers.add_parser(
        name,
        help="train a registered model",
        description=(
            f"Train a registered model ({', '.join(models)}). Config = the model's defaults, then --config FILE, "
            "then --set key=value and the typed flags. Writes OUT/checkpoint.pt, OUT/metrics.jsonl, "
            "OUT/samples/step_XXXXXX.png and OUT/eval.json. `--from models/NAME` re-runs the training recorded in a "
            "shipped model's card (its config, seed and budget)."
        ),
    )
    p.add_argument("model", metavar="MODEL", nargs="?", help=f"one of: {', '.join(models)}")
    p.add_argument("--from", dest="from_entry", metavar="ENTRY",
                   help="re-run the training a shipped model records (models/NAME); --set, --steps, --budget-minutes override it")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of config values")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override one config value")
    p.add_argument("--steps", type=count(0), help="number of training steps (total, counting resumed ones)")
    p.add_argument("--budget-minutes", type=duration(positive=True),
                   help="stop after this much training wall time in all (counting resumed runs, as --steps does; "
                        "the record keeps the cumulative budget); a resume with a larger budget continues the run")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=integer(0), help="config seed")
    p.add_argument("--data-dir", metavar="DIR", help="folder of HR images (config data_dir); default built-in photos")
    p.add_argument("--vgg-weights", metavar="FILE", help="torchvision-format VGG19 weights (config vgg_weights)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _from_entry(args: argparse.Namespace) -> tuple[str, dict[str, Any], int | None, float | None]:
    """Model, config, steps and budget recorded by a shipped entry, for `train --from`."""
    card = read_entry(args.from_entry)
    if args.model and args.model != card["model"]:
        raise GanserveError(f"{args.from_entry} records model {card['model']!r}, not {args.model!r}")
    training = card.get("training", {})
    steps, budget = training.get("steps_target"), training.get("budget_minutes")
    if steps is None and budget is None:
        steps = training.get("steps")
    return card["model"], dict(card["config"]), steps, budget


def run(args: argparse.Namespace) -> int:
    """Resolve the config and train; print the checkpoint path."""
    from ganserve.training.trainer import train

    base: dict[str, Any] = {}
    steps, budget = args.steps, args.budget_minutes
    if args.from_entry:
        args.model, base, recorded_steps, recorded_budget = _from_entry(args)
        if steps is None and budget is None:
            steps, budget = recorded_steps, recorded_budget
        args.out = args.out or f"runs/{Path(args.from_entry).name}-retrained"
    models = registry.available()
    if args.model not in models:
        given = f"unknown model {args.model!r}; " if args.model else ""
        raise GanserveError(f"{given}give a MODEL (one of: {', '.join(models)}) or --from models/NAME")
    overrides: dict[str, Any] = {**base, **parse_set(args.set)}
    for flag, key in (("seed", "seed"), ("data_dir", "data_dir"), ("vgg_weights", "vgg_weights")):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    path = train(
        args.model,
        overrides,
        steps=steps,
        budget_minutes=budget,
        out_dir=args.out,
        resume=args.resume,
        config_file=args.config,
        progress=not args.no_progress,
    )
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(path)
    return 0
