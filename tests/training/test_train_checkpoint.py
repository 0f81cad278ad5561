"""Checkpoint files: atomic round trip, rebuild from the registry, and clear refusals of bad files."""

from __future__ import annotations

import pickle

import pytest
import torch

from ganserve.core.errors import CheckpointError
from ganserve.training import registry
from ganserve.training.checkpoint import FORMAT, build_from_checkpoint, load_checkpoint, save_checkpoint
from ganserve.training.config import config_dict


def _saved(tmp_path, tiny):
    torch.manual_seed(0)
    app = registry.build("srresnet", tiny)
    path = save_checkpoint(
        tmp_path / "ck.pt",
        {"model": "srresnet", "config": config_dict(app.config), "state": app.state_dict(), "step": 5,
         "metrics": {"psnr_y": 20.0}},
    )
    return app, path


def test_round_trip_fills_format_fields_and_leaves_no_temp(tmp_path, tiny) -> None:
    app, path = _saved(tmp_path, tiny)
    payload = load_checkpoint(path)
    assert payload["format"] == FORMAT and payload["format_version"] == 1
    assert payload["step"] == 5 and payload["metrics"] == {"psnr_y": 20.0}
    assert payload["optim"] == {} and payload["commit"] and payload["created"].startswith("20")
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    rebuilt = build_from_checkpoint(path)
    assert not rebuilt.training and rebuilt.train_info["step"] == 5
    for k, v in app.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v)


def test_missing_truncated_foreign_files_are_refused(tmp_path, tiny) -> None:
    _, path = _saved(tmp_path, tiny)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt or foreign"):
        load_checkpoint(cut)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(empty)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, other)
    with pytest.raises(CheckpointError, match="not a ganserve checkpoint"):
        load_checkpoint(other)
    evil = tmp_path / "pickle.pt"
    evil.write_bytes(pickle.dumps(object()))
    with pytest.raises(CheckpointError, match="truncated, corrupt or foreign"):
        load_checkpoint(evil)
    future = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="version 99 not supported"):
        load_checkpoint(future)


def test_weights_that_do_not_fit_are_refused(tmp_path, tiny) -> None:
    _, path = _saved(tmp_path, tiny)
    payload = load_checkpoint(path)
    payload["config"]["channels"] = 16
    bad = save_checkpoint(tmp_path / "bad.pt", payload)
    with pytest.raises(CheckpointError, match="weights do not fit model 'srresnet'"):
        build_from_checkpoint(bad)


def test_missing_or_extra_weights_are_refused_with_torchs_first_line(tmp_path, tiny) -> None:
    """strict loading: a state with a key missing or one too many is refused, not half-loaded; the message carries
    the first line of torch's own report (which names the model class)."""
    _, path = _saved(tmp_path, tiny)
    payload = load_checkpoint(path)
    for name, change in (("missing", lambda s: s.pop(next(iter(s)))), ("extra", lambda s: s.update(extra=torch.ones(1)))):
        state = dict(payload["state"])
        change(state)
        bad = save_checkpoint(tmp_path / f"{name}.pt", {**payload, "state": state})
        with pytest.raises(CheckpointError) as info:
            build_from_checkpoint(bad)
        message = str(info.value)
        assert "weights do not fit model 'srresnet' (Error(s) in loading state_dict for " in message, message
        assert message.count("\n") == 0


def test_a_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path, tiny) -> None:
    _, path = _saved(tmp_path, tiny)
    before = path.read_bytes()
    with pytest.raises(Exception):  # a payload torch cannot pickle: the write fails half way
        save_checkpoint(path, {**load_checkpoint(path), "metrics": {"f": lambda: None}})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_corrupt_file_message_is_one_line_of_the_first_reason(tmp_path, tiny) -> None:
    _, path = _saved(tmp_path, tiny)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(cut)
    message = str(info.value)
    assert "\n" not in message and message.endswith(")")
    try:
        torch.load(cut, weights_only=False)
    except Exception as exc:  # noqa: BLE001  (the reason torch gives, first line, at most 160 characters)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    assert f"({first[:160]})" in message


def test_git_commit_outside_a_repository_is_unknown(tmp_path) -> None:
    from ganserve.training.checkpoint import git_commit

    assert git_commit(tmp_path) == "unknown"
    head = git_commit()
    assert len(head) == 40 and all(c in "0123456789abcdef" for c in head)  # this checkout's commit
