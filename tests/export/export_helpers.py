"""Helpers for the export tests: a repository snapshot and an in-process `ganserve export` runner."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from ganserve.pipeline.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (relative path -> sha256), to prove a failed export changed nothing."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`ganserve export ...` in-process; returns (exit code, stdout, stderr)."""
    rc = main(["export", *argv])
    out, err = capsys.readouterr()
    return rc, out, err
