"""Shared test setup: the repo root importable, and modest thread use on the 2-core machines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# Read by torch / onnxruntime / numpy when they load; set without importing them (serving tests stay torch-free).
os.environ.setdefault("OMP_NUM_THREADS", "2")
# Servers started by tests keep their warm-start cache in a folder of this run, never in the user's ~/.cache.
if "GANSERVE_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["GANSERVE_CACHE_DIR"] = tempfile.mkdtemp(prefix="ganserve-test-cache-")
    atexit.register(shutil.rmtree, os.environ["GANSERVE_CACHE_DIR"], True)
