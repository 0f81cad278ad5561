"""The wheel: built from a copy of the sources, it installs one import name, carries its package data, and every
command runs from it outside the checkout (given --shipped / --models-dir where the shipped models are needed: they
are not in the wheel).

The installed copy runs in an interpreter of its own: a bare venv whose only additions are the wheel (installed
with pip, no dependencies) and a path to this venv's site-packages for the dependencies. That path is a plain
sys.path entry, so the checkout's editable install (a .pth hook there) is not loaded, and nothing can come from the
checkout: every command runs in a temporary folder, and a test asserts where ganserve was imported from.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from ganserve.core.layers import FOLDERS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real wheel, built from a copy of the sources (so the checkout gets no build/ folder)."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "src"
    skip = shutil.ignore_patterns("__pycache__", "results", "*.egg-info")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, source / folder, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                             "-w", str(out), str(source)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = out.glob("ganserve-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare venv with the wheel installed and this venv's dependencies on its path; returns its python."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                             "--target", str(site), str(wheel)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def run(python: Path, cwd: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GANSERVE_SHIPPED")}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_installs_one_top_level_name_with_its_package_data(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"ganserve", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for expected in ("ganserve/training/trainer.py", "ganserve/serving/server.py", "ganserve/export/exporter.py",
                     "ganserve/benchmarks/bench.py", "ganserve/core/contract.py", "ganserve/pipeline/cli.py",
                     "ganserve/serving/proto/ganserve/v1/images_pb2.py", "ganserve/core/card_roles.py",
                     "ganserve/training/configs/srresnet_cpu30.yaml", "ganserve/serving/web/index.html"):
        assert expected in names, expected


def test_the_installed_copy_is_the_one_that_runs(installed: Path, tmp_path: Path) -> None:
    done = run(installed, tmp_path, "-c", "import ganserve.core.contract as c, ganserve.pipeline.cli as p; "
                                          "print(c.__file__); print(p.__file__)")
    assert done.returncode == 0, done.stderr[-2000:]
    for line in done.stdout.split():
        assert "site-packages/ganserve/" in line and not line.startswith(str(ROOT)), line


def test_every_command_answers_help_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    commands = ["train", "ship", "import", "export", "serve", "client", "bench", "demo"]
    assert all(c in done.stdout for c in commands)
    for command in commands:
        done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", command, "--help")
        assert done.returncode == 0 and "usage:" in done.stdout, (command, done.stderr[-2000:])


def test_ship_lists_and_export_exports_the_shipped_models_given_their_folder(installed: Path, tmp_path: Path) -> None:
    done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", "ship", "--list", "--models-dir", str(SHIPPED))
    assert done.returncode == 0 and "| srresnet |" in done.stdout, done.stderr[-2000:]
    done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", "ship", "--list")  # no models/ here
    assert done.returncode == 0 and "| srresnet |" not in done.stdout
    done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", "export", str(SHIPPED / "ssgan"), "--repo",
               str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "repo" / "ssgan" / "1" / "model.onnx").is_file()


def test_the_demo_runs_from_the_wheel_on_shipped_models_and_trains_from_its_packaged_recipe(installed: Path,
                                                                                            tmp_path: Path) -> None:
    done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", "demo", "--tiny", "--shipped", str(SHIPPED),
               "--models", "ssgan", "--examples", "1", "--bench-requests", "2", timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert (tmp_path / "demo-output").is_dir() and (tmp_path / "model-repository" / "ssgan").is_dir()
    # nothing shipped here: the SR fallback trains (2 steps) from the recipe installed with the package
    done = run(installed, tmp_path, "-m", "ganserve.pipeline.cli", "demo", "--tiny", "--out", "again", "--repo",
               "repo2", "--examples", "1", "--bench-requests", "2", timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "srresnet_cpu30.yaml" in done.stdout + done.stderr
