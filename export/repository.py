"""Atomic writes into a model repository: stage everything in a temp dir, then rename into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ganserve.core.contract import check_model_name, model_versions
from ganserve.core.errors import RepositoryError


def _version_dirs(model_dir: Path) -> list[int]:
    """Every numeric version folder, with or without a model.onnx (a half-written one still blocks the number)."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def check_target(repo: str | Path, name: str, version: int | None, overwrite: bool) -> tuple[Path, int]:
    """Validate the destination before any expensive work; returns (repo path, version to write)."""
    check_model_name(name)
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise RepositoryError(f"{repo}: exists and is not a directory")
    anchor = next((p for p in [repo, *repo.parents] if p.exists()), None)
    if anchor is None or not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise RepositoryError(f"{repo}: cannot create or write the model repository here")
    model_dir = repo / name
    if model_dir.exists() and not model_dir.is_dir():
        raise RepositoryError(f"{model_dir}: exists and is not a directory")
    existing = _version_dirs(model_dir)
    if version is None:
        version = (existing[-1] + 1) if existing else 1
    if version < 1:
        raise RepositoryError(f"version must be a positive integer, got {version}")
    if version in existing and not overwrite:
        raise RepositoryError(f"{model_dir / str(version)} already exists; pass --overwrite to replace it")
    return repo, version


@contextmanager
def _staging(repo: Path) -> Iterator[Path]:
    """A temp dir beside the repository (same filesystem, so os.replace is atomic), removed afterwards."""
    parent = repo.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.export-", dir=parent))
    except OSError as exc:
        raise RepositoryError(f"{repo}: cannot stage files next to the repository ({exc.strerror or exc})") from exc
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())


def write_model(
    repo: str | Path,
    name: str,
    version: int,
    version_files: dict[str, bytes],
    model_files: dict[str, str],
    overwrite: bool = False,
) -> Path:
    """Put `version_files` in <repo>/<name>/<version>/ and `model_files` (card, config) in <repo>/<name>/.

    A new model appears in one rename. For an existing model the new version folder is renamed in, then the
    card and config (only when this is now the highest version, so they describe what Triton serves); other
    versions are never touched. Any failure rolls back and leaves the repository as it was.
    """
    repo = Path(repo)
    model_dir = repo / name
    try:
        with _staging(repo) as tmp:
            staged_model = tmp / name
            staged_version = staged_model / str(version)
            for fname, data in version_files.items():
                _write(staged_version / fname, data)
            for fname, text in model_files.items():
                _write(staged_model / fname, text)
            if not model_dir.exists():
                repo.mkdir(parents=True, exist_ok=True)
                os.replace(staged_model, model_dir)
                return model_dir / str(version)
            _swap_in(tmp, staged_model, model_dir, version, model_files, overwrite)
            return model_dir / str(version)
    except OSError as exc:
        raise RepositoryError(f"{model_dir}: writing the model failed ({exc.strerror or exc}); nothing was changed") from exc


def _swap_in(tmp: Path, staged: Path, model_dir: Path, version: int, model_files: dict[str, str], overwrite: bool) -> None:
    """Rename a staged version (and card/config) into an existing model folder, rolling back on failure."""
    target = model_dir / str(version)
    backup_dir = tmp / "previous"
    backup_dir.mkdir()
    moved_old = moved_new = False
    replaced: list[str] = []
    try:
        if target.exists():
            if not overwrite:
                raise RepositoryError(f"{target} already exists; pass --overwrite to replace it")
            os.replace(target, backup_dir / "version")
            moved_old = True
        os.replace(staged / str(version), target)
        moved_new = True
        if version >= max(model_versions(model_dir) or [version]):
            for fname in model_files:
                if (model_dir / fname).exists():
                    shutil.copy2(model_dir / fname, backup_dir / fname)
                os.replace(staged / fname, model_dir / fname)
                replaced.append(fname)
    except BaseException:
        for fname in replaced:
            if (backup_dir / fname).exists():
                os.replace(backup_dir / fname, model_dir / fname)
            else:
                (model_dir / fname).unlink(missing_ok=True)
        if moved_new:
            shutil.rmtree(target, ignore_errors=True)
        if moved_old:
            os.replace(backup_dir / "version", target)
        raise

