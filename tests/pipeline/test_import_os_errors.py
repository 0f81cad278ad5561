"""`ganserve import` when the OS says no: an OUT under a regular file or in a folder it may not write, a full disk
while the checkpoint is written, the final rename of the checkpoint folder or the move of the staged export into
the repository failing, an input that cannot be read. Each ends in one line on stderr and exit 2 through the real
command line, and leaves the files as they were: no OUT (or the previous one, intact, under --overwrite), the model
repository byte for byte as before, no staging folder. Faults are injected at the OS call (os.replace, os.fsync,
os.mkdir, open), never in the import itself."""

from __future__ import annotations

import builtins
import errno
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import foreign_weights as fw
from ganserve.pipeline import cli
from test_import import ganserve_import, write_weights

torch.set_num_threads(1)
NAME = "anime"


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under root (relative path -> "folder" or the file's sha256): a failed import changes
    none of them, and leaves no staging folder among them."""
    return {str(p.relative_to(root)): "folder" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


def run_import(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """`ganserve import ... --quiet` through the command line's entry point, in this process: (exit code, stdout,
    stderr)."""
    rc = cli.main(["import", *map(str, args), "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line(rc: int, out: str, err: str, *fragments: str) -> None:
    """Exit 2, nothing on stdout, one line on stderr without a traceback, saying each fragment."""
    assert rc == 2, err
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("ganserve import: error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def fail_on(monkeypatch: pytest.MonkeyPatch, name: str, when: Callable[..., bool], error: OSError) -> list[Any]:
    """Make ``os.<name>`` raise ``error`` for the calls ``when(*args)`` picks (as the OS would); returns those calls."""
    real = getattr(os, name)
    failed: list[Any] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            failed.append(args)
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, flaky)
    return failed


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Real-ESRGAN SRVGGNetCompact file in the published layout (random weights)."""
    return write_weights(tmp_path_factory.mktemp("weights") / "realesr-animevideov3.pth", {"params": fw.srvgg_state()})


@pytest.fixture(scope="module")
def imported(weights: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(OUT, REPO) of a successful `import --export` (version 1 with its config and card): the state the failing
    imports below start from."""
    root = tmp_path_factory.mktemp("imported")
    out, repo = root / "runs" / NAME, root / "repo"
    assert cli.main(["import", str(weights), "--name", NAME, "--out", str(out), "--export", str(repo), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "import.json"]
    assert sorted(p.name for p in (repo / NAME).iterdir()) == ["1", "config.pbtxt", "model_card.json"]
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    assert [p.name for p in out.parent.iterdir()] == [NAME]  # no staging folder left
    return out, repo


@pytest.fixture
def previous(imported: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of that OUT and REPO in this test's folder: what --overwrite and the next export version would change."""
    out, repo = tmp_path / "runs" / NAME, tmp_path / "repo"
    shutil.copytree(imported[0], out)
    shutil.copytree(imported[1], repo)
    return out, repo


# -- OUT cannot be made ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("below", ["sub", "sub/deeper"])
def test_out_under_a_regular_file(weights: Path, tmp_path: Path, below: str) -> None:
    """A file where OUT needs a folder (root may write anywhere, so this is the 'cannot create' every user can hit)."""
    (tmp_path / "file.txt").write_text("not a folder\n")
    before = snapshot(tmp_path)
    out = tmp_path / "file.txt" / below
    done = ganserve_import(weights, "--name", NAME, "--out", out, "--export", tmp_path / "repo", "--quiet")
    assert_one_line(done.returncode, done.stdout, done.stderr, f"{out}: cannot create the output folder",
                    "file.txt is a file, not a folder")
    assert snapshot(tmp_path) == before


def test_out_in_a_folder_it_may_not_write(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """OUT's parent is mode 0500; root ignores the mode, so there mkdir is made to answer as it would a user."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.geteuid() == 0:
            fail_on(monkeypatch, "mkdir", lambda path, *_: Path(path).is_relative_to(locked),
                    PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
        before = snapshot(tmp_path)
        out = locked / "runs" / NAME
        rc, stdout, stderr = run_import(capsys, weights, "--name", NAME, "--out", out, "--export", tmp_path / "repo")
        assert_one_line(rc, stdout, stderr, f"{out}: ", "Permission denied")
        assert snapshot(tmp_path) == before
    finally:
        locked.chmod(0o700)


# -- a full disk while the checkpoint is written -----------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_full_disk_while_writing_the_checkpoint(weights: Path, previous: tuple[Path, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                overwrite: bool) -> None:
    """The checkpoint's bytes are written, then the flush to disk reports ENOSPC: no OUT (or the old one), REPO as
    it was."""
    out, repo = previous
    if not overwrite:
        shutil.rmtree(out.parent)
    before = snapshot(tmp_path)
    failed = fail_on(monkeypatch, "fsync", lambda fd: True, enospc())
    rc, stdout, stderr = run_import(capsys, weights, "--name", NAME, "--out", out, "--export", repo,
                                    *(["--overwrite"] if overwrite else []))
    monkeypatch.undo()
    assert_one_line(rc, stdout, stderr, f"{out}: writing the checkpoint failed (No space left on device); "
                                        "nothing was written")
    assert len(failed) == 1
    assert snapshot(tmp_path) == before


# -- after the export: the final renames -------------------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_final_rename_fails_after_the_export(weights: Path, previous: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             overwrite: bool) -> None:
    """The export (version 2) is done, staged; renaming the checkpoint folder to OUT fails: the repository has no
    version 2 and its config and card are unchanged, OUT is absent or the old one."""
    out, repo = previous
    if not overwrite:
        shutil.rmtree(out.parent)
    before = snapshot(tmp_path)
    failed = fail_on(monkeypatch, "replace", lambda src, dst: Path(dst) == out and Path(src).name.startswith(".import"),
                     enospc())
    rc, stdout, stderr = run_import(capsys, weights, "--name", NAME, "--out", out, "--export", repo,
                                    *(["--overwrite"] if overwrite else []))
    monkeypatch.undo()
    assert_one_line(rc, stdout, stderr, f"{out}: renaming the checkpoint folder into place failed (No space left on "
                                        "device); nothing was written")
    assert len(failed) == 1
    assert snapshot(tmp_path) == before
    assert not (repo / NAME / "2").exists()


def test_publishing_the_export_fails_after_out_is_in_place(weights: Path, previous: tuple[Path, Path], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The last step, moving the staged version 2 into the repository, fails: the repository rolls itself back and
    the checkpoint folder already renamed to OUT is undone, the old OUT back in its place."""
    out, repo = previous
    before = snapshot(tmp_path)
    failed = fail_on(monkeypatch, "replace", lambda src, dst: Path(dst) == repo / NAME / "2", enospc())
    rc, stdout, stderr = run_import(capsys, weights, "--name", NAME, "--out", out, "--export", repo, "--overwrite")
    monkeypatch.undo()
    assert_one_line(rc, stdout, stderr, f"{repo}: exporting failed (No space left on device); nothing was written")
    assert len(failed) == 1
    assert snapshot(tmp_path) == before


# -- the input cannot be read ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("given, message", [
    ("a-folder.pth", "a-folder.pth: a folder, not a weights file"),
    ("missing.pth", "missing.pth: no such file"),
])
def test_an_input_that_is_not_a_file(tmp_path: Path, given: str, message: str) -> None:
    (tmp_path / "a-folder.pth").mkdir()
    before = snapshot(tmp_path)
    done = ganserve_import(tmp_path / given, "--name", NAME, "--out", tmp_path / "runs" / NAME,
                           "--export", tmp_path / "repo", "--quiet")
    assert_one_line(done.returncode, done.stdout, done.stderr, message)
    assert snapshot(tmp_path) == before


def test_an_input_it_may_not_read(weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Mode 0000; root reads it anyway, so there opening it answers as it would a user."""
    src = shutil.copy(weights, tmp_path / "private.pth")
    before = snapshot(tmp_path)
    os.chmod(src, 0)
    real_open = builtins.open

    def refusing(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)) and Path(file) == Path(src):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *args, **kwargs)

    if os.geteuid() == 0:
        monkeypatch.setattr(builtins, "open", refusing)
    rc, stdout, stderr = run_import(capsys, src, "--name", NAME, "--out", tmp_path / "runs" / NAME,
                                    "--export", tmp_path / "repo")
    monkeypatch.undo()
    os.chmod(src, 0o600)
    assert_one_line(rc, stdout, stderr, f"{src}: cannot be read (Permission denied)")
    assert snapshot(tmp_path) == before
