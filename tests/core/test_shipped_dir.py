"""Where the shipped models are found without walking up from a source file: $GANSERVE_SHIPPED, else ./models."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganserve.core.shipped import SHIPPED_ENV, from_shipped, shipped_dir


def test_the_environment_names_the_folder_else_models_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SHIPPED_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert shipped_dir() == tmp_path / "models"
    monkeypatch.setenv(SHIPPED_ENV, str(tmp_path / "elsewhere"))
    assert shipped_dir() == tmp_path / "elsewhere"


def test_a_models_path_from_a_config_is_found_in_the_shipped_folder(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SHIPPED_ENV, str(tmp_path / "shipped"))
    assert from_shipped("models/face-judges/loss_net.pt") == tmp_path / "shipped" / "face-judges" / "loss_net.pt"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "here.pt").write_bytes(b"")
    assert from_shipped("models/here.pt") == Path("models/here.pt")  # a path that exists from here stays as given
    assert from_shipped("other/x.pt") == Path("other/x.pt")  # not a models/ path: as given
