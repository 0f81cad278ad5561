"""The ONNX Runtime flavour `make setup` picks: by architecture, overridable, refused when unknown, one installed."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ganserve.core.flavour import FLAVOURS, default_flavour

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = {"cpu": "onnxruntime", "openvino": "onnxruntime-openvino", "gpu": "onnxruntime-gpu"}


@pytest.mark.parametrize("machine, system, want", [
    ("x86_64", "Linux", "openvino"), ("AMD64", "Windows", "openvino"), ("aarch64", "Linux", "cpu"),
    ("arm64", "Darwin", "cpu"), ("x86_64", "Darwin", "cpu"), ("ppc64le", "Linux", "cpu"),
])
def test_default_flavour_follows_the_architecture(machine: str, system: str, want: str) -> None:
    assert default_flavour(machine, system) == want


def _clean_env() -> dict[str, str]:
    """This environment without what an enclosing make passes down (`make test-cpu` sets ORT and VENV)."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ORT", "VENV")}


def _make_dry_run(*args: str) -> str:
    done = subprocess.run(["make", "-n", "-B", "setup", f"PY={sys.executable}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=_clean_env())
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_setup_installs_the_default_flavour_unless_ort_is_given() -> None:
    arch = subprocess.run([sys.executable, str(ROOT / "locks" / "lock.py"), "--arch"], capture_output=True, text=True,
                          timeout=30, check=True).stdout.strip()
    default = default_flavour()
    assert f"--require-hashes locks/{arch}/{default}.txt" in _make_dry_run()
    for flavour in FLAVOURS:
        out = _make_dry_run(f"ORT={flavour}")
        # uv pip sync installs exactly the flavour's lock: whatever it does not name (another flavour) is removed
        assert f"uv pip sync --quiet --python .venv/bin/python" in out and f"locks/{arch}/{flavour}.txt" in out
        assert f".installed-{flavour}" in out and "--no-deps --no-build-isolation -e ." in out
        lock = (ROOT / "locks" / arch / f"{flavour}.txt")
        if lock.exists():
            text = lock.read_text()
            assert f"\n{DISTRIBUTIONS[flavour]}==" in text
            assert not [d for f, d in DISTRIBUTIONS.items() if f != flavour and f"\n{d}==" in text]


def test_an_unknown_flavour_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    done = subprocess.run(["make", "setup", "ORT=tpu", f"VENV={venv}", f"PY={sys.executable}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=_clean_env())
    assert done.returncode != 0 and "ORT must be one of cpu, openvino, gpu (got 'tpu')" in done.stdout + done.stderr
    assert not venv.exists()
    script = subprocess.run([sys.executable, str(ROOT / "core" / "flavour.py"), "tpu"], capture_output=True,
                            text=True, timeout=30)
    assert script.returncode == 2 and script.stderr.strip() == "unknown ONNX Runtime flavour 'tpu': use ORT=cpu|openvino|gpu"


def test_exactly_one_flavour_is_installed() -> None:
    installed = []
    for flavour, dist in DISTRIBUTIONS.items():
        try:
            importlib.metadata.version(dist)
            installed.append(flavour)
        except importlib.metadata.PackageNotFoundError:
            pass
    assert len(installed) == 1, f"expected exactly one onnxruntime flavour, found {installed or 'none'}"
