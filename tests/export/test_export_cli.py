"""`ganserve export` refusals: exit code 2, one line on stderr, and the repository untouched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import export_tiny_apps as tiny
from export_helpers import run_cli, snapshot
from ganserve.training.checkpoint import save_checkpoint


@pytest.fixture
def repo(tmp_path: Path, upsampler_ckpt: Path, capsys: pytest.CaptureFixture) -> Path:
    """A repository that already holds version 1 of the tiny upsampler."""
    rc, _, err = run_cli(capsys, str(upsampler_ckpt), "--repo", str(tmp_path / "repo"), "--quiet")
    assert rc == 0, err
    return tmp_path / "repo"


def _refused(capsys, repo: Path, *argv: str, match: str) -> None:
    before = snapshot(repo.parent)
    rc, out, err = run_cli(capsys, *argv, "--quiet")
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ganserve export: error: ") and match in lines[0], err
    assert out == ""
    assert snapshot(repo.parent) == before
    assert not [p for p in repo.parent.iterdir() if ".export-" in p.name]


def test_missing_checkpoint(repo, capsys) -> None:
    _refused(capsys, repo, str(repo.parent / "nope.pt"), "--repo", str(repo), match="no such checkpoint file")


def test_truncated_checkpoint(repo, upsampler_ckpt, capsys) -> None:
    bad = repo.parent / "truncated.pt"
    data = upsampler_ckpt.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    _refused(capsys, repo, str(bad), "--repo", str(repo), match="truncated, corrupt or foreign")


@pytest.mark.parametrize("kind", ["text", "plain torch file"])
def test_foreign_file(repo, capsys, kind) -> None:
    bad = repo.parent / "foreign.pt"
    if kind == "text":
        bad.write_text("this is not a checkpoint\n")
    else:
        torch.save({"weights": torch.zeros(3)}, bad)
    _refused(capsys, repo, str(bad), "--repo", str(repo), match="foreign.pt")


def test_unknown_model_name(repo, capsys) -> None:
    ckpt = save_checkpoint(repo.parent / "alien.pt", {"model": "no-such-model", "config": {}, "state": {}, "step": 1})
    _refused(capsys, repo, str(ckpt), "--repo", str(repo), match="unknown model 'no-such-model'")


def test_unwritable_repository(repo, upsampler_ckpt, capsys) -> None:
    blocker = repo.parent / "a-file"
    blocker.write_text("x")
    _refused(capsys, repo, str(upsampler_ckpt), "--repo", str(blocker / "repo"), match="cannot create or write")
    _refused(capsys, repo, str(upsampler_ckpt), "--repo", str(blocker), match="not a directory")


def test_existing_version_without_overwrite(repo, upsampler_ckpt, capsys) -> None:
    _refused(capsys, repo, str(upsampler_ckpt), "--repo", str(repo), "--version", "1", match="--overwrite")


def test_parity_failure(repo, tmp_path, capsys) -> None:
    ckpt = tiny.save_tiny_checkpoint(tmp_path / "broken.pt", tiny.BROKEN)
    _refused(capsys, repo, str(ckpt), "--repo", str(repo), match="fp32 parity failed: max abs error")
    assert not (repo / tiny.BROKEN).exists()


def test_bad_name_and_options(repo, upsampler_ckpt, capsys) -> None:
    _refused(capsys, repo, str(upsampler_ckpt), "--repo", str(repo), "--name", "../up", match="invalid model name")
    _refused(capsys, repo, str(upsampler_ckpt), "--repo", str(repo), "--opset", "9", match="opset 9 not supported")
    _refused(capsys, repo, str(upsampler_ckpt), "--repo", str(repo), "--half-io", match="--precision fp16 only")
    with pytest.raises(SystemExit) as exc:
        run_cli(capsys, str(upsampler_ckpt), "--repo", str(repo), "--precision", "int4")
    assert exc.value.code == 2 and "invalid choice: 'int4'" in capsys.readouterr().err


def test_process_exit_code(tmp_path: Path) -> None:
    """The real `python -m ganserve.pipeline.cli` process: exit status 2 and exactly one line."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(
        [sys.executable, "-m", "ganserve.pipeline.cli", "export", str(tmp_path / "missing.pt"), "--repo", str(tmp_path / "r")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no such checkpoint file" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_success_prints_the_version_folder(upsampler_ckpt, tmp_path, capsys) -> None:
    rc, out, err = run_cli(capsys, str(upsampler_ckpt), "--repo", str(tmp_path), "--precision", "fp16")
    assert rc == 0
    assert out.startswith(str(tmp_path / tiny.UPSAMPLER / "1") + "  (fp16, max abs error vs torch ")
    assert "fp32 parity: max abs error" in err and "held-out quality (fp16): psnr" in err  # progress lines
