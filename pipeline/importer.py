"""`ganserve import FILE --name NAME`: weights trained elsewhere, recognised by their key layout, loaded strictly into
the project's own implementation of the network, and written as a ganserve checkpoint that `ganserve export`,
serving, the bench and the demo take unchanged.

Files are read as tensors only: ``.pth``/``.pt`` through ``torch.load(weights_only=True)`` (a pickle that would run
code is refused before anything runs) and ``.safetensors`` through the safetensors library. The layouts it knows
are registered beside the networks they load into (training/networks/layouts.py: each names the keys every such
file has, the grammar all its keys follow, how its hyper-parameters are read from key names and shapes, how its keys
map onto the project's network, and which application hosts it); this module reads the file, asks which layout it
is and fits the weights.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import re
import shutil
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganserve.core.contract import check_model_name
from ganserve.core.errors import RepositoryError, first_line
from ganserve.core.files import file_sha256
from ganserve.export.exporter import export_checkpoint
from ganserve.export.repository import check_target, write_model
from ganserve.training import registry
from ganserve.training.checkpoint import git_commit, save_checkpoint
from ganserve.training.config import config_dict
from ganserve.training.networks.layouts import Format, ImportFailure, Reading, State, layouts
from ganserve.training.registry import merge_config

CHECKPOINT = "checkpoint.pt"
RECORD = "import.json"
DEFAULT_OUT = Path("runs") / "import"
# Where BasicSR-style files keep the weights, in order of preference (the EMA weights are the ones released).
WRAPPERS = ("params_ema", "params", "state_dict")


# -- reading a file ----------------------------------------------------------------------------------------------------
def _refused_global(exc: BaseException) -> str:
    """The global a weights-only unpickler refused (e.g. ``builtins.open``), where the message names it."""
    found = re.search(r"(?:Unsupported global: GLOBAL|global) ([\w.]+)", str(exc))
    return found.group(1) if found else ""


def read_tensors(path: str | Path) -> tuple[State, str]:
    """The tensors of a ``.pth``/``.pt`` or ``.safetensors`` file and where in it they were (``params_ema``, ...).

    Never runs code from the file: pickles go through ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.exists():
        raise ImportFailure(f"{path}: no such file")
    if not path.is_file():
        raise ImportFailure(f"{path}: {'a folder' if path.is_dir() else 'not a regular file'}, not a weights file")
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except OSError as exc:
        raise ImportFailure(f"{path}: cannot be read ({exc.strerror or first_line(exc)})") from exc
    if empty:
        raise ImportFailure(f"{path}: empty file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            loaded: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise ImportFailure(f"{path}: truncated or corrupt safetensors file ({first_line(exc)})") from exc
    elif suffix in (".pth", ".pt"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            what = _refused_global(exc)
            if what or "weights_only" in str(exc).lower() or "weights only" in str(exc).lower():
                raise ImportFailure(
                    f"{path}: refused: the pickle holds more than tensors"
                    f"{f' (it would call {what})' if what else ''}; only weights are read "
                    "(torch.load weights_only=True), nothing in the file ran") from exc
            raise ImportFailure(f"{path}: truncated or corrupt .pth file ({first_line(exc)})") from exc
        except Exception as exc:  # torch raises many types for truncated zips and foreign files
            with open(path, "rb") as fh:
                cut = fh.read(2) == b"PK" and not zipfile.is_zipfile(path)
            reason = "a zip archive (torch.save's format) whose end is missing" if cut else first_line(exc)
            raise ImportFailure(f"{path}: truncated or corrupt .pth file ({reason})") from exc
    else:
        raise ImportFailure(f"{path}: unknown file type {suffix or '(none)'!r}; give a .pth, .pt or .safetensors file")
    return _unwrap(path, loaded)


def _unwrap(path: Path, loaded: Any) -> tuple[State, str]:
    """The state dict inside what was loaded: under params_ema / params / state_dict, or the mapping itself."""
    where = ""
    if isinstance(loaded, Mapping):
        for key in WRAPPERS:
            if isinstance(loaded.get(key), Mapping):
                loaded, where = loaded[key], key
                break
    if not isinstance(loaded, Mapping) or not loaded:
        held = "an empty mapping" if isinstance(loaded, Mapping) else type(loaded).__name__
        raise ImportFailure(f"{path}: holds {held}, not a state dict of tensors")
    bad = [k for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ImportFailure(f"{path}: not a state dict of tensors ({bad[0]!r} holds "
                            f"{type(loaded[bad[0]]).__name__}; wrappers read: {', '.join(WRAPPERS)})")
    state = dict(loaded)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
        where = f"{where + ' ' if where else ''}(module. prefix removed)"
    return state, where


# -- which layout a file has -------------------------------------------------------------------------------------------


def _few(keys: list[str], n: int = 4) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _difference(missing: list[str], unexpected: list[str]) -> str:
    parts = [f"missing {_few(missing)}"] if missing else []
    parts += [f"unexpected {_few(unexpected)}"] if unexpected else []
    return "; ".join(parts) or "no key differs"


def _nearest(keys: list[str]) -> tuple[Format, list[str], list[str]]:
    """The format whose required keys the file has most of (then: whose grammar most keys follow)."""

    def score(fmt: Format) -> tuple[float, float]:
        missing, unexpected = fmt.mismatch(keys)
        return (1 - len(missing) / len(fmt.required), 1 - len(unexpected) / max(len(keys), 1))

    best = max(layouts(), key=score)
    return (best, *best.mismatch(keys))


def recognise(state: State, wanted: str = "auto") -> Format:
    """The format whose keys the file has: ``wanted`` checked against the keys, or the one that fits (auto)."""
    keys = list(state)
    known = {f.name: f for f in layouts()}
    fitting = [f for f in known.values() if f.mismatch(keys) == ([], [])]
    if wanted != "auto":
        if wanted not in known:
            raise ImportFailure(f"unknown format {wanted!r}; known: auto, {', '.join(known)}")
        fmt = known[wanted]
        missing, unexpected = fmt.mismatch(keys)
        if missing or unexpected:
            looks = fitting[0].name if fitting else f"nothing known (nearest: {_nearest(keys)[0].name})"
            raise ImportFailure(f"--format {wanted} contradicts the keys ({_difference(missing, unexpected)}); "
                                f"they look like {looks}")
        return fmt
    if fitting:
        return fitting[0]
    fmt, missing, unexpected = _nearest(keys)
    raise ImportFailure(f"unknown layout ({len(keys)} tensors); nearest known format: {fmt.name} "
                        f"({fmt.title}): {_difference(missing, unexpected)}")


# -- fitting the weights into the project's network --------------------------------------------------------------------
def _fit(generator: torch.nn.Module, state: State, what: str) -> list[str]:
    """Load ``state`` strictly into ``generator``; a one-line error naming the first keys or shapes that differ.
    Returns notes (e.g. batch-norm counters that old files lack, filled with 0)."""
    own = generator.state_dict()
    notes = []
    counters = [k for k in own if k.endswith(".num_batches_tracked") and k not in state]
    if counters:  # files from PyTorch < 0.4.1 have no batch-norm step counters; eval mode never reads them
        state = {**state, **{k: torch.zeros_like(own[k]) for k in counters}}
        notes.append(f"{len(counters)} batch-norm num_batches_tracked counters absent from the file, set to 0")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ImportFailure(f"the keys do not fit {what}: {_difference(missing, unexpected)}")
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise ImportFailure(f"{k} has shape {list(state[k].shape)} in the file; {what} needs {list(own[k].shape)}"
                            + (f" (+{len(wrong) - 1} more of the wrong shape)" if len(wrong) > 1 else ""))
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ImportFailure(f"{_few(bad, 2)} hold NaN or infinite values")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()})
    if dtypes != ["float32"]:
        notes.append(f"weights stored as {', '.join(dtypes)}, loaded as the network's float32")
    try:
        generator.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ImportFailure(f"the weights do not load into {what} ({first_line(exc)})") from exc
    return notes


@dataclass
class Imported:
    """An imported file: the application built around its weights, and what the checkpoint records about it."""

    app: Any
    format: Format
    reading: Reading
    facts: dict[str, Any]


def build_import(path: str | Path, wanted: str = "auto") -> Imported:
    """Read ``path``, recognise its format, build the hosting application and load the weights strictly into its
    generator (nothing is written). The other networks of the application keep their seeded initialisation."""
    path = Path(path)
    state, where = read_tensors(path)
    try:
        fmt = recognise(state, wanted)
    except ImportFailure as exc:
        raise ImportFailure(f"{path.name}: {exc}") from exc
    try:
        renamed = fmt.rename(state)
        reading = fmt.read(renamed)
    except ImportFailure as exc:
        raise ImportFailure(f"{path.name} ({fmt.name}): {exc}") from exc
    renamed = {k: v for k, v in renamed.items() if k not in reading.drop}
    torch.manual_seed(0)  # what the file does not hold (a discriminator) starts at a seeded initialisation
    app = registry.build(reading.application, merge_config(reading.application, reading.config))
    generator = app.generator
    spec = getattr(generator, "network_spec", {"type": type(generator).__name__})
    what = f"{spec['type']}({', '.join(f'{k}={v}' for k, v in reading.hyper.items())})"
    try:
        load_notes = _fit(generator, renamed, what)
    except ImportFailure as exc:
        raise ImportFailure(f"{path.name} ({fmt.name}): {exc}") from exc
    app.eval()
    export = app.export_spec()
    gen_keys = {f"generator.{k}" for k in generator.state_dict()}
    seeded = sorted({k.split(".")[0] for k in app.state_dict() if k not in gen_keys})
    needs = {
        "task": export.task,
        "value_range": list(export.inputs[0].value_range or []),
        "channels": reading.channels,
        "layout": export.inputs[0].layout,
        "scale": export.scale,
        "spatial_multiple": export.spatial_multiple,
        "tile_safe": export.tile_safe,
    }
    facts = {
        "file": path.name,
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "format": fmt.name,
        "format_title": fmt.title,
        "weights_from": where or "the top level of the file",
        "tensors": len(state),
        "hyper_parameters": reading.hyper,
        "application": reading.application,
        "network": dict(spec),
        "key_map": fmt.key_map,
        "not_from_file": [f"{name}: seeded random initialisation (seed 0), not in the file; inference never uses it"
                          for name in seeded],
        "needs": needs,
        "notes": [*reading.notes, *load_notes],
    }
    return Imported(app, fmt, reading, facts)


def checkpoint_payload(imported: Imported) -> dict[str, Any]:
    """The checkpoint `ganserve train` would write for these weights, marked imported (step 0, no optimizer)."""
    app, facts = imported.app, imported.facts
    return {
        "model": app.model_name,
        "config": config_dict(app.config),
        "state": {k: v.detach().cpu() for k, v in app.state_dict().items()},
        "optim": {},
        "step": 0,
        "metrics": {
            "imported": facts,
            "data": f"imported: {facts['file']} ({facts['format']}: {facts['format_title']}), no training run here",
            "interrupted": False,
            "world_size": 1,
        },
        "commit": git_commit(),
    }


def _new_dirs(path: Path) -> list[Path]:
    """The folders ``path.mkdir(parents=True)`` would create, outermost first."""
    return [p for p in reversed([path, *path.parents]) if not p.exists()]


@contextmanager
def _os_errors(path: str | Path, doing: str) -> Iterator[None]:
    """An OSError of this step (full disk, no permission, a file in the path), raw or in the export's RepositoryError,
    as a one-line ImportFailure naming the user's path and the OS reason: exit 2, no traceback, no staging path."""
    try:
        yield
    except (OSError, RepositoryError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if not isinstance(cause, OSError):
            raise
        reason = cause.strerror or _first_line(cause)
        raise ImportFailure(f"{path}: {doing} failed ({reason}); nothing was written") from exc


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse an OUT that exists (without --overwrite) or cannot be created, before the slow part."""
    if out.exists() and not overwrite:
        raise ImportFailure(f"{out}: already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ImportFailure(f"{out}: exists and is not a folder")
    anchor = next((p for p in [out.parent, *out.parent.parents] if p.exists()), None)
    if anchor is not None and not anchor.is_dir():
        raise ImportFailure(f"{out}: cannot create the output folder ({anchor} is a file, not a folder)")
    if anchor is not None and not os.access(anchor, os.W_OK | os.X_OK):
        raise ImportFailure(f"{out}: cannot create the output folder ({anchor}: {os.strerror(errno.EACCES)})")


def _publish(staged_repo: Path, repo: Path, name: str, version: int) -> Path:
    """Move an export staged in ``staged_repo`` into ``repo`` through the repository's own all-or-nothing write."""
    staged = staged_repo / name
    version_dir = staged / str(version)
    version_files = {str(p.relative_to(version_dir)): p.read_bytes() for p in sorted(version_dir.rglob("*"))
                     if p.is_file()}
    model_files = {p.name: p.read_bytes().decode("utf-8") for p in sorted(staged.iterdir()) if p.is_file()}
    return write_model(repo, name, version, version_files, model_files)


def _roll_back(out: Path, old: Path, moved_old: bool, moved_new: bool, created: list[Path]) -> None:
    """Undo what a failed import did: its OUT removed, the previous OUT put back, the folders it created removed."""
    if moved_new:
        shutil.rmtree(out, ignore_errors=True)
    if moved_old:
        try:
            os.replace(old, out)
        except OSError as exc:
            raise ImportFailure(f"{out}: the previous folder could not be put back ({exc.strerror or exc}); "
                                f"it is kept at {old}") from exc
    for folder in sorted(set(created), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            continue


def import_weights(
    path: str | Path,
    name: str,
    *,
    fmt: str = "auto",
    out: str | Path | None = None,
    overwrite: bool = False,
    export_repo: str | Path | None = None,
    progress: bool = True,
) -> tuple[Path, Imported, Path | None]:
    """Import ``path`` as ``out/checkpoint.pt`` (default ``runs/import/NAME``) with ``out/import.json`` beside it;
    with ``export_repo`` also export it there as model ``name``. Returns (checkpoint, what was imported, the
    exported version folder or None).

    All or nothing: the checkpoint folder and the export are staged; then OUT is renamed into place and the staged
    export moved into the repository (itself all or nothing); a failure at any step, an OS error included, undoes
    the steps before it and ends in a one-line ImportFailure (or the repository's RepositoryError)."""
    check_model_name(name)
    out = Path(out) if out else DEFAULT_OUT / name
    with _os_errors(out, "checking the output folder"):
        _check_out(out, overwrite)
    version = 0
    if export_repo is not None:
        export_repo = Path(export_repo)
        with _os_errors(export_repo, "checking the model repository"):
            version = check_target(export_repo, name, None, False)[1]
    with _os_errors(path, "reading the weights file"):
        imported = build_import(path, fmt)
    payload = checkpoint_payload(imported)
    created = _new_dirs(out.parent) + (_new_dirs(export_repo) if export_repo is not None else [])
    old = out.with_name(f".old-{out.name}")
    stage: Path | None = None
    staged_repo: Path | None = None  # a scratch repository the export is written to first
    version_dir: Path | None = None
    moved_old = moved_new = False
    try:
        with _os_errors(out, "creating the output folder"):
            out.parent.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(prefix=f".import-{out.name}-", dir=out.parent))
        with _os_errors(out, "writing the checkpoint"):
            save_checkpoint(stage / CHECKPOINT, payload)
            record = {"checkpoint": CHECKPOINT, "model": payload["model"], "config": payload["config"],
                      "created": payload.get("created"), **imported.facts}
            (stage / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if export_repo is not None:
            if progress:
                print(f"import: exporting {name} into {export_repo}", file=sys.stderr, flush=True)
            with _os_errors(export_repo, "exporting"):
                staged_repo = Path(tempfile.mkdtemp(prefix=f".import-{out.name}-export-", dir=out.parent))
                export_checkpoint(stage / CHECKPOINT, staged_repo / "repo", name=name, version=version,
                                  progress=progress)
        with _os_errors(out, "renaming the checkpoint folder into place"):
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                os.replace(out, old)
                moved_old = True
            os.replace(stage, out)
            moved_new = True
        if staged_repo is not None and export_repo is not None:
            with _os_errors(export_repo, "exporting"):
                version_dir = _publish(staged_repo / "repo", export_repo, name, version)
    except BaseException:
        for folder in (stage, staged_repo):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        _roll_back(out, old, moved_old, moved_new, created)
        raise
    if staged_repo is not None:
        shutil.rmtree(staged_repo, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return out / CHECKPOINT, imported, version_dir


def add_commands(subparsers: Any, name: str) -> None:
    """Add the ``import`` subcommand (ganserve.pipeline.cli maps it here)."""
    p = subparsers.add_parser(
        name,
        help="import weights trained elsewhere (Real-ESRGAN, ESRGAN, BasicSR, pytorch-CycleGAN) as a checkpoint",
        description="Read FILE (.pth/.pt through torch.load weights_only=True, never running code; or .safetensors), "
        "recognise its layout and hyper-parameters from key names and shapes, load it strictly into ganserve's own "
        "network and write OUT/checkpoint.pt (a ganserve checkpoint: `ganserve export` takes it) and OUT/import.json "
        f"(where it came from and what it needs). Formats: {', '.join(f'{f.name} = {f.title}' for f in layouts())}.",
    )
    p.add_argument("file", metavar="FILE", help="the weights file (.pth, .pt or .safetensors)")
    p.add_argument("--name", required=True, help="model name (the export's name; default OUT is runs/import/NAME)")
    p.add_argument("--format", dest="fmt", choices=("auto", *(f.name for f in layouts())), default="auto",
                   help="the file's layout (default auto: recognised from the keys); a format that contradicts the "
                        "keys is an error")
    p.add_argument("--out", metavar="DIR", help="output folder (default runs/import/NAME)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--export", dest="export_repo", metavar="REPO",
                   help="also export it into this model repository as NAME (as `ganserve export` would)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    checkpoint, imported, version_dir = import_weights(
        args.file, args.name, fmt=args.fmt, out=args.out, overwrite=args.overwrite, export_repo=args.export_repo,
        progress=not args.quiet)
    facts = imported.facts
    hyper = ", ".join(f"{k}={v}" for k, v in facts["hyper_parameters"].items())
    print(f"{checkpoint}  ({facts['format']}: {hyper}; application {facts['application']}, "
          f"network {facts['network']['type']}; sha256 {facts['sha256'][:12]})")
    if version_dir is not None:
        print(version_dir)
    else:
        print(f"next: ganserve export {checkpoint} --repo REPO --name {args.name}")
    return 0
