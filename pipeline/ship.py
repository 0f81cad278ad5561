"""`ganserve ship`: evaluate a trained checkpoint on held-out data and add it to the shipped models (models/).

The entry layout (training_record.json beside checkpoint.pt and the exported model) is ganserve.core.shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from ganserve.core.contract import check_model_name
from ganserve.core.errors import CheckpointError, GanserveError
from ganserve.core.machine import describe as describe_cpu
from ganserve.core.shipped import (
    SHIP_CHECKPOINT, SHIPPED_ENV, SHIPPED_VARIANTS, TRAINING_RECORD, read_entry, shipped_dir, shipped_entries,
)
from ganserve.export.exporter import export_checkpoint
from ganserve.training.checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from ganserve.training.config import parse_set, user_data

ENTRY_LIMIT = 10 * 2**20
TOTAL_LIMIT = 90 * 2**20
# Held-out figures that are not quality (compared by nothing, reproduced by nothing).
VOLATILE_KEYS = ("elapsed_seconds", "eval_seconds")


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) and k not in VOLATILE_KEYS}


# fp16 storage of a shipped checkpoint's weights is kept when the headline held-out figure moves by no more than
# this (absolute, in the figure's unit: dB for PSNR), else the entry stores fp32.
FP16_TOLERANCE = 0.01


def _stored_weights(app: Any, payload: dict[str, Any], key: str, held_out: dict[str, float],
                    say: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inference state the entry stores and what the record says of it: fp16 (half the bytes) when the held-out
    figures of the fp16-rounded weights hold (within FP16_TOLERANCE on the headline), else fp32. The weights load
    back into float32 networks, so export, serving and `ganserve train --resume` see float32 either way."""
    state = app.inference_state(payload["state"])
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in state.items()}
    app.load_state_dict({**app.state_dict(), **{k: v.float() if v.dtype == torch.float16 else v
                                                 for k, v in half.items()}}, strict=True)
    torch.manual_seed(0)
    rounded = _numbers(app.evaluate())
    shift = abs(rounded[key] - held_out[key])
    if shift <= FP16_TOLERANCE:
        say(f"[ship] weights stored in fp16: held-out {key} {held_out[key]:.4f} -> {rounded[key]:.4f}")
        return half, {"storage": "fp16", "fp32_held_out": held_out, "held_out_fp16": rounded,
                      "rule": f"fp16 when the headline moves by <= {FP16_TOLERANCE}"}
    app.load_state_dict({**app.state_dict(), **state}, strict=True)
    say(f"[ship] weights stored in fp32: fp16 moves held-out {key} by {shift:.4f} (> {FP16_TOLERANCE})")
    return state, {"storage": "fp32", "fp16_held_out": {key: rounded[key]},
                   "rule": f"fp16 when the headline moves by <= {FP16_TOLERANCE}"}


def _folder_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (or of ``path`` itself when it is a file)."""
    files = [path] if path.is_file() else path.rglob("*")
    return sum(f.stat().st_size for f in files if f.is_file())


def _training_summary(payload: dict[str, Any]) -> dict[str, Any]:
    metrics = payload.get("metrics", {})
    return {
        "steps": int(payload["step"]),
        "wall_seconds": metrics.get("elapsed_seconds"),
        "budget_minutes": metrics.get("budget_minutes"),
        "steps_target": metrics.get("steps_target"),
        "world_size": metrics.get("world_size", 1),
        "cpu": metrics.get("cpu") or f"{describe_cpu()} (the shipping machine; the checkpoint does not record its CPU)",
        "interrupted": bool(metrics.get("interrupted", False)),
    }


def int8_methods() -> tuple[str, ...]:
    """The int8 quantizers a shipped entry is exported with: both when NNCF is installed (the export keeps the
    fastest that passes the quality rule), else onnxruntime's QDQ."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        return ("qdq",)
    return ("qdq", "nncf")


def _export_entry(checkpoint: Path, stage: Path, name: str, options: dict[str, Any] | None, progress: bool) -> Path:
    """Export an entry's checkpoint into ``stage`` as version 1 with the shipped variants that pass."""
    return export_checkpoint(checkpoint, stage, name=name, version=1, progress=progress, options=options or None,
                             variants=SHIPPED_VARIANTS, drop_failing_variants=True, int8_methods=int8_methods())


def _check_sizes(models_dir: Path, name: str, entry: Path) -> None:
    size = _folder_bytes(entry)
    if size > ENTRY_LIMIT:
        raise GanserveError(f"{name}: the entry is {size / 2**20:.1f} MB, over the 10 MB limit; train a more compact model")
    others = sum(_folder_bytes(p) for p in models_dir.iterdir()  # judges etc. count too
                 if p.name != name and not p.name.startswith("."))
    if others + size > TOTAL_LIMIT:
        raise GanserveError(f"models/ would hold {(others + size) / 2**20:.1f} MB, over the {TOTAL_LIMIT // 2**20} MB limit")


def _swap_in(models_dir: Path, name: str, entry: Path) -> Path:
    """Replace models_dir/name with the staged ``entry`` (the old one is removed only after the rename)."""
    final = models_dir / name
    old = models_dir / f".old-{name}"
    shutil.rmtree(old, ignore_errors=True)  # left by an interrupted earlier swap
    if final.exists():
        os.replace(final, old)
    os.replace(entry, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def reexport(name: str, models_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Export a shipped entry's checkpoint again with today's exporter (graph rewrites, shipped variants), keeping its
    checkpoint, training record and log; the entry is swapped in whole, so nothing is half-written."""
    models_dir = Path(models_dir) if models_dir is not None else shipped_dir()
    entry = models_dir / name
    record = read_entry(entry)
    stage = Path(tempfile.mkdtemp(prefix=f".reexport-{name}-", dir=models_dir))
    try:
        staged = stage / name
        _export_entry(entry / record["file"], stage, name, record.get("options"), progress)
        for kept in entry.iterdir():  # what is about the checkpoint stays as it is
            if kept.is_file() and not (staged / kept.name).exists():
                shutil.copy2(kept, staged / kept.name)
        _check_sizes(models_dir, name, staged)
        final = _swap_in(models_dir, name, staged)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    if progress:
        print(f"[ship] {final}: exported again ({_folder_bytes(final) / 2**20:.2f} MB)")
    return final


def ship(
    checkpoint: str | Path,
    name: str,
    *,
    command: str = "",
    target: str = "",
    note: str = "",
    options: dict[str, Any] | None = None,
    models_dir: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Evaluate ``checkpoint`` on held-out data and write it as the entry ``models_dir/name`` (atomically).

    ``options`` override config values before evaluation and export (e.g. which CycleGAN direction); they are
    recorded in the card so the entry reproduces. Refuses an entry over 10 MB, a models folder over 90 MB, a model
    trained on user data, and (unless ``force``) one whose headline held-out metric does not beat the entry it
    would replace.
    """
    check_model_name(name)
    models_dir = Path(models_dir) if models_dir is not None else shipped_dir()
    payload = load_checkpoint(checkpoint)
    if payload.get("metrics", {}).get("interrupted"):
        raise CheckpointError(f"{checkpoint}: an interrupted training; ship a finished one")
    say = print if progress else (lambda *_: None)
    say(f"[ship] evaluating {checkpoint} on held-out data")
    app = build_from_checkpoint(checkpoint, options)
    if user_data(app.config):
        raise GanserveError(f"{checkpoint}: trained on user data {user_data(app.config)}; "
                            "a shipped model must train on built-in data")
    spec = app.export_spec()
    torch.manual_seed(0)
    held_out = _numbers(app.evaluate())
    key = spec.quality_key
    if key not in held_out:
        raise GanserveError(f"{payload['model']}: evaluate() lacks the headline metric {key!r}")
    state, weights = _stored_weights(app, payload, key, held_out, say)
    if weights["storage"] == "fp16":  # the figures the entry records are those of the weights it stores
        held_out = weights.pop("held_out_fp16")
    eval_set = app.evaluate_eval_set()
    final = models_dir / name
    if final.exists() and not force:
        old = read_entry(final)
        old_value = old["held_out"].get(old["quality_key"])
        if old["quality_key"] == key and old_value is not None and held_out[key] <= old_value:
            raise GanserveError(
                f"{final}: the shipped model has {key} {old_value:.4f}; this checkpoint has {held_out[key]:.4f} "
                "and does not beat it (use --force to replace it anyway)")
    models_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".ship-{name}-", dir=models_dir))
    try:
        entry = stage / name
        stripped = stage / SHIP_CHECKPOINT
        # optimizer state and training-only networks (discriminators) stay with the run: the entry serves and
        # re-evaluates from the rest; `ganserve train --from` retrains from the recorded config, not these weights
        save_checkpoint(stripped, {**payload, "optim": {}, "state": state,
                                   "removed": sorted(set(app.training_only) | set(payload.get("removed", ())))})
        say(f"[ship] exporting {name} beside it (ONNX, parity, model card)")
        _export_entry(stripped, stage, name, options, progress)
        os.replace(stripped, entry / SHIP_CHECKPOINT)
        log = Path(checkpoint).with_name("metrics.jsonl")
        if log.is_file():
            shutil.copyfile(log, entry / "metrics.jsonl")
        card = {
            "model": payload["model"],
            "file": SHIP_CHECKPOINT,
            "command": command or "(not recorded)",
            "reproduce": (f"ganserve train --from models/{name}" if not payload.get("metrics", {}).get("imported")
                          else "imported weights (see imported): not trained here, so not reproducible by ganserve train"),
            **({"imported": payload["metrics"]["imported"]} if payload.get("metrics", {}).get("imported") else {}),
            "config": payload["config"],
            "options": dict(options or {}),
            "seed": payload["config"].get("seed"),
            "commit": payload.get("commit", "unknown"),
            "created": payload.get("created", ""),
            "training": {**_training_summary(payload), **({"conditions": note} if note else {})},
            "quality_key": key,
            "held_out": held_out,
            **({"eval_set": _numbers(eval_set)} if eval_set else {}),
            "weights": weights,
            "held_out_data": {k: v for k, v in payload.get("metrics", {}).items()
                              if isinstance(v, str) and k not in ("cpu",)},
            "target": target,
        }
        (entry / TRAINING_RECORD).write_text(json.dumps(card, indent=2) + "\n")
        _check_sizes(models_dir, name, entry)
        _swap_in(models_dir, name, entry)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    say(f"[ship] {final}: {key} {held_out[key]:.4f} ({_folder_bytes(final) / 2**20:.2f} MB)")
    return final


BASELINE_PREFIXES = ("baseline", "bicubic", "identity", "input", "rainy", "chance")


def _headline(card: dict[str, Any]) -> str:
    """The headline metric and its baseline(s) as text, e.g. 'psnr_y 30.21 (bicubic_psnr_y 28.72)'."""
    held = card["held_out"]
    key = card["quality_key"]
    baselines = [f"{p}_{key}" for p in BASELINE_PREFIXES if f"{p}_{key}" in held]
    text = f"{key} {held[key]:.4g}"
    if baselines:
        text += " (" + ", ".join(f"{k} {held[k]:.4g}" for k in baselines) + ")"
    return text


def shipped_table(models_dir: str | Path | None = None) -> str:
    """A Markdown table of the shipped models, from their cards (the README's table is this output)."""
    lines = ["| entry | model | size | training | CPU | held-out headline (baseline) | target |",
             "|---|---|---|---|---|---|---|"]
    for entry in shipped_entries(models_dir):
        card = read_entry(entry)
        t = card.get("training", {})
        wall = t.get("wall_seconds")
        trained = f"{t.get('steps')} steps, {wall / 60:.1f} min" if wall else f"{t.get('steps')} steps"
        cpu = str(t.get("cpu", "")).split(" (the shipping")[0]
        lines.append(f"| {entry.name} | {card['model']} | {_folder_bytes(entry) / 2**20:.1f} MB | {trained} | {cpu} | "
                     f"{_headline(card)} | {card.get('target', '')} |")
    return "\n".join(lines)


def add_commands(subparsers: Any, name: str) -> None:
    """Add the ``ship`` subcommand (ganserve.pipeline.cli maps it here)."""
    p = subparsers.add_parser(
        name,
        help="evaluate a trained checkpoint and add it to the shipped models (models/)",
        description="Re-evaluate CHECKPOINT on held-out data, strip its optimizer state, export it beside itself and "
        "write models/NAME/{checkpoint.pt, training_record.json, metrics.jsonl, config.pbtxt, model_card.json, 1/model.onnx} "
        "atomically. Refuses an entry over 10 MB and one that does not beat the entry it replaces.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", help="a finished checkpoint written by `ganserve train`")
    p.add_argument("--name", help="entry name under models/ (also its model name when served)")
    p.add_argument("--list", action="store_true", help="print the table of shipped models (Markdown) and exit")
    p.add_argument("--command", dest="train_command", default="",
                   help="the exact `ganserve train ...` command that trained it")
    p.add_argument("--target", default="", help="the application's quality target, one line, for the card")
    p.add_argument("--models-dir", default=None, metavar="DIR", help=f"where entries live (default: ${SHIPPED_ENV}, else models/ here)")
    p.add_argument("--option", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config value before evaluation and export (e.g. export_direction=ba); recorded")
    p.add_argument("--note", default="", help="conditions of the training worth recording (e.g. a shared CPU)")
    p.add_argument("--force", action="store_true", help="replace the entry even if it is not better")
    p.add_argument("--reexport", metavar="NAME[,NAME]|all", default="",
                   help="export shipped entries again with this exporter (rewrites, variants that pass), keeping "
                        "their checkpoints and training records")
    p.add_argument("--reship", metavar="NAME[,NAME]|all", default="",
                   help="ship entries' own checkpoints again with today's ship (fp16 weights where the held-out "
                        "figures hold, the evaluation set's figures, this exporter), keeping their recorded command, "
                        "target, conditions and options")
    p.set_defaults(func=_run_ship)


def reship(name: str, models_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Ship a shipped entry's own checkpoint again (``force``: the same weights, so no better figure is needed), with
    its recorded command, target, conditions and options: what today's ship adds (fp16 storage where the held-out
    figures hold, evaluation-set figures, the current exporter) without retraining."""
    models_dir = Path(models_dir) if models_dir is not None else shipped_dir()
    entry = models_dir / name
    record = read_entry(entry)
    with tempfile.TemporaryDirectory(prefix=f".reship-{name}-", dir=models_dir) as tmp:
        for kept in (record["file"], "metrics.jsonl"):
            if (entry / kept).is_file():
                shutil.copy2(entry / kept, Path(tmp) / kept)
        return ship(Path(tmp) / record["file"], name, command=record.get("command", ""),
                    target=record.get("target", ""), note=record.get("training", {}).get("conditions", ""),
                    options=record.get("options") or None, models_dir=models_dir, force=True, progress=progress)


def _run_ship(args: argparse.Namespace) -> int:
    if args.list:
        print(shipped_table(args.models_dir))
        return 0
    for flag, redo in (("reexport", reexport), ("reship", reship)):
        asked = getattr(args, flag)
        if not asked:
            continue
        known = [e.name for e in shipped_entries(args.models_dir)]
        names = known if asked == "all" else [n.strip() for n in asked.split(",") if n.strip()]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise GanserveError(f"--{flag}: no shipped entry {', '.join(unknown)} (shipped: {', '.join(known)})")
        for name in names:
            print(redo(name, args.models_dir))
        return 0
    if not args.checkpoint or not args.name:
        raise GanserveError("give CHECKPOINT and --name (or --list)")
    if not Path(args.checkpoint).is_file():
        raise GanserveError(f"{args.checkpoint}: no such checkpoint file")
    out = ship(args.checkpoint, args.name, command=args.train_command, target=args.target, note=args.note,
               options=parse_set(args.option) or None,
               models_dir=args.models_dir, force=args.force)
    print(out)
    return 0
