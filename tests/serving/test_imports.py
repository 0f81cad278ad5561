"""serving never imports torch, training or export (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import importlib, pkgutil, sys
import serving
names = [m.name for m in pkgutil.walk_packages(serving.__path__, "serving.")]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "training", "export"))
print(len(names), bad)
assert not bad, bad
"""


def test_serving_never_imports_torch() -> None:
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    count, bad = result.stdout.split(" ", 1)
    assert int(count) >= 15 and bad.strip() == "[]"
