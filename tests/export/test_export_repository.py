"""Repository writes: versions, overwrite, and atomicity when a write fails midway (an injected fault)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import ganserve.export.repository as repository
import export_tiny_apps as tiny
from export_helpers import snapshot
from ganserve.export.exporter import export_checkpoint, read_card
from ganserve.core.contract import model_versions
from ganserve.core.errors import RepositoryError


def _export(ckpt: Path, repo: Path, **kw) -> Path:
    return export_checkpoint(ckpt, repo, **kw)


def test_versions_count_up_and_leave_others_alone(upsampler_ckpt: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    v1 = _export(upsampler_ckpt, repo)
    first = snapshot(v1)
    v2 = _export(upsampler_ckpt, repo, precision="fp16")
    assert (v1.name, v2.name) == ("1", "2") and model_versions(repo / tiny.UPSAMPLER) == [1, 2]
    assert snapshot(v1) == first
    card = read_card(v2)
    assert (card.version, card.precision) == (2, "fp16")
    # Re-exporting the older version replaces only it; the card keeps describing the latest (2).
    _export(upsampler_ckpt, repo, version=1, precision="int8", overwrite=True)
    assert snapshot(v1) != first and read_card(v2).version == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no staging leftovers


def test_existing_version_refused_without_overwrite(upsampler_ckpt: Path, tmp_path: Path) -> None:
    _export(upsampler_ckpt, tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(RepositoryError, match="already exists; pass --overwrite"):
        _export(upsampler_ckpt, tmp_path, version=1)
    assert snapshot(tmp_path) == before


def _fail_on(monkeypatch: pytest.MonkeyPatch, target: str, after: int) -> None:
    """Make only the `after`-th call (0-based) of repository.<target> raise, as a full disk would."""
    real = getattr(repository, target) if target != "os.replace" else os.replace
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == after + 1:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    if target == "os.replace":
        monkeypatch.setattr(repository.os, "replace", flaky)
    else:
        monkeypatch.setattr(repository, target, flaky)


@pytest.mark.parametrize("after", [0, 1, 3])
def test_fault_while_staging_a_new_model_leaves_nothing(upsampler_ckpt, tmp_path, monkeypatch, after) -> None:
    _fail_on(monkeypatch, "_write", after)
    with pytest.raises(RepositoryError, match="No space left on device.*nothing was changed"):
        _export(upsampler_ckpt, tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def two_versions(upsampler_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("two") / "repo"
    _export(upsampler_ckpt, repo)
    _export(upsampler_ckpt, repo)
    return repo


@pytest.mark.parametrize("after", [0, 1, 2, 3])
def test_fault_while_renaming_into_an_existing_model_rolls_back(
    upsampler_ckpt, two_versions, tmp_path, monkeypatch, after
) -> None:
    """A fault at moving the old version aside, the new version in, the config or the card: repository as before."""
    repo = tmp_path / "repo"
    shutil.copytree(two_versions, repo)
    before = snapshot(tmp_path)
    _fail_on(monkeypatch, "os.replace", after)
    with pytest.raises(RepositoryError, match="nothing was changed"):
        _export(upsampler_ckpt, repo, version=2, overwrite=True, precision="fp16")
    monkeypatch.undo()
    assert snapshot(tmp_path) == before
    assert read_card(repo / tiny.UPSAMPLER / "2").precision == "fp32"


def test_check_target_validates_destination(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(RepositoryError, match="not a directory"):
        repository.check_target(tmp_path / "file", "m", None, False)
    with pytest.raises(RepositoryError, match="cannot create or write"):
        repository.check_target(tmp_path / "file" / "repo", "m", None, False)
    with pytest.raises(RepositoryError, match="invalid model name"):
        repository.check_target(tmp_path, "../escape", None, False)
    (tmp_path / "m" / "4").mkdir(parents=True)  # even an empty version folder blocks its number
    assert repository.check_target(tmp_path, "m", None, False) == (tmp_path, 5)
