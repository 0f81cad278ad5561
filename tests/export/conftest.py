"""Fixtures for the export tests: tiny checkpoints, a repository snapshot helper, the CLI runner."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import export_tiny_apps as tiny
from ganserve.cli import main


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


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def upsampler_ckpt(ckpt_dir: Path) -> Path:
    return tiny.save_tiny_checkpoint(ckpt_dir / "upsampler.pt", tiny.UPSAMPLER)


@pytest.fixture(scope="session")
def classifier_ckpt(ckpt_dir: Path) -> Path:
    return tiny.save_tiny_checkpoint(ckpt_dir / "classifier.pt", tiny.CLASSIFIER)
