"""`ganserve train MODEL ...`: config from defaults, a YAML/JSON file and --set/typed flags, then the trainer."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ganserve.errors import GanserveError

from training import registry
from training.config import parse_set


def add_commands(subparsers: Any, name: str) -> None:
    """Add the ``train`` or ``ship`` subcommand (models listed in --help)."""
    if name == "ship":
        _add_ship(subparsers, name)
        return
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
    p.add_argument("--steps", type=int, help="number of training steps (total, counting resumed ones)")
    p.add_argument("--budget-minutes", type=float, help="stop after this much wall time (this invocation)")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--seed", type=int, help="config seed")
    p.add_argument("--data-dir", metavar="DIR", help="folder of HR images (config data_dir); default built-in photos")
    p.add_argument("--vgg-weights", metavar="FILE", help="torchvision-format VGG19 weights (config vgg_weights)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _from_entry(args: argparse.Namespace) -> tuple[str, dict[str, Any], int | None, float | None]:
    """Model, config, steps and budget recorded by a shipped entry, for `train --from`."""
    from training.ship import read_entry

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
    from training.trainer import train

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


def _add_ship(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(
        name,
        help="evaluate a trained checkpoint and add it to the shipped models (models/)",
        description="Re-evaluate CHECKPOINT on held-out data, strip its optimizer state, export it beside itself and "
        "write models/NAME/{checkpoint.pt, card.json, metrics.jsonl, config.pbtxt, model_card.json, 1/model.onnx} "
        "atomically. Refuses an entry over 10 MB and one that does not beat the entry it replaces.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", help="a finished checkpoint written by `ganserve train`")
    p.add_argument("--name", help="entry name under models/ (also its model name when served)")
    p.add_argument("--list", action="store_true", help="print the table of shipped models (Markdown) and exit")
    p.add_argument("--command", dest="train_command", default="",
                   help="the exact `ganserve train ...` command that trained it")
    p.add_argument("--target", default="", help="the application's quality target, one line, for the card")
    p.add_argument("--models-dir", default=None, metavar="DIR", help="where entries live (default: the project's models/)")
    p.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config value before evaluation and export (e.g. export_direction=ba); recorded")
    p.add_argument("--note", default="", help="conditions of the training worth recording (e.g. a shared CPU)")
    p.add_argument("--force", action="store_true", help="replace the entry even if it is not better")
    p.set_defaults(func=_run_ship)


def _run_ship(args: argparse.Namespace) -> int:
    from training.ship import SHIPPED, ship, shipped_table

    if args.list:
        print(shipped_table(args.models_dir or SHIPPED))
        return 0
    if not args.checkpoint or not args.name:
        raise GanserveError("give CHECKPOINT and --name (or --list)")
    if not Path(args.checkpoint).is_file():
        raise GanserveError(f"{args.checkpoint}: no such checkpoint file")
    out = ship(args.checkpoint, args.name, command=args.train_command, target=args.target, note=args.note,
               options=parse_set(args.option) or None,
               models_dir=args.models_dir or SHIPPED, force=args.force)
    print(out)
    return 0
