"""Checkpoint behaviour the mutation run (mutation/run.py) found unchecked: pickled code is never run, other format
versions and non-mapping fields are refused, a new run folder is created, and a commit-less repository is 'unknown'."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from ganserve.core.errors import CheckpointError
from ganserve.training.checkpoint import build_from_checkpoint, git_commit, load_checkpoint, save_checkpoint
from test_train_checkpoint import _saved


class _MakesAFolder:
    """Pickles as a call to os.mkdir: unpickling it with arbitrary objects allowed would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.path),)


def test_a_checkpoint_holding_pickled_code_is_refused_without_running_it(tmp_path: Path, tiny: dict) -> None:
    """A file with every ganserve field plus an object whose unpickling would run os.mkdir is refused as foreign,
    the folder is never made, and the message carries the first line of torch's own refusal (at most 160 chars)."""
    _, path = _saved(tmp_path, tiny)
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({**load_checkpoint(path), "metrics": {"x": _MakesAFolder(marker)}}, evil)
    with pytest.raises(CheckpointError, match="truncated, corrupt or foreign file") as info:
        load_checkpoint(evil)
    assert not marker.exists()
    with pytest.raises(Exception) as torchs:  # torch's own refusal, read the safe way
        torch.load(evil, weights_only=True)
    first = str(torchs.value).strip().splitlines()[0]
    assert len(first) > 160  # so the 160-character cut shows
    message = str(info.value)
    assert message.endswith(f"({first[:160]})") and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("version", [0, 2, None, "1"])
def test_any_other_format_version_is_refused_by_name(tmp_path: Path, tiny: dict, version: object) -> None:
    """Only format_version 1 loads: an older (0) or newer (2) version, a missing one or the string '1' is a
    CheckpointError naming the version, even when every other field is right."""
    _, path = _saved(tmp_path, tiny)
    payload = load_checkpoint(path)
    if version is None:
        del payload["format_version"]
    else:
        payload["format_version"] = version
    other = tmp_path / "other-version.pt"
    torch.save(payload, other)
    with pytest.raises(CheckpointError, match=rf"format version {version!r} not supported \(want 1\)"):
        load_checkpoint(other)


@pytest.mark.parametrize("field", ["state", "config"])
def test_a_state_or_config_that_is_not_a_mapping_is_refused(tmp_path: Path, tiny: dict, field: str) -> None:
    """Either of 'state' and 'config' not being a mapping is enough to refuse the file (the other being fine)."""
    _, path = _saved(tmp_path, tiny)
    payload = load_checkpoint(path)
    payload[field] = [1, 2]
    bad = save_checkpoint(tmp_path / f"bad-{field}.pt", payload)
    with pytest.raises(CheckpointError, match="'state' and 'config' must be mappings"):
        load_checkpoint(bad)


def test_saving_into_a_new_nested_run_folder_creates_it(tmp_path: Path, tiny: dict) -> None:
    """A checkpoint path whose folders do not exist yet (runs/<name>/checkpoints/) is saved, folders made."""
    app, path = _saved(tmp_path, tiny)
    nested = tmp_path / "runs" / "exp1" / "checkpoints" / "last.pt"
    assert save_checkpoint(nested, load_checkpoint(path)) == nested
    rebuilt = build_from_checkpoint(nested)
    assert rebuilt.train_info["step"] == 5
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in app.state_dict().items())
    assert [p.name for p in nested.parent.iterdir()] == ["last.pt"]


def test_git_commit_of_a_repository_without_commits_is_unknown(tmp_path: Path) -> None:
    """In a freshly initialised repository `git rev-parse HEAD` fails but prints 'HEAD': that is no commit."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, capture_output=True, timeout=30)
    assert git_commit(tmp_path) == "unknown"
