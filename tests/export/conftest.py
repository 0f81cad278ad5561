"""Session fixtures for the export tests: real checkpoints of the tiny test applications."""

from __future__ import annotations

from pathlib import Path

import pytest

import export_tiny_apps as tiny


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def upsampler_ckpt(ckpt_dir: Path) -> Path:
    return tiny.save_tiny_checkpoint(ckpt_dir / "upsampler.pt", tiny.UPSAMPLER)


@pytest.fixture(scope="session")
def classifier_ckpt(ckpt_dir: Path) -> Path:
    return tiny.save_tiny_checkpoint(ckpt_dir / "classifier.pt", tiny.CLASSIFIER)
