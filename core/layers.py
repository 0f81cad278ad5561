"""The layers of ganserve, bottom to top, and what each may import (tests/serving/test_imports.py checks it).

One import name, ``ganserve``: every layer is a folder at the top of the checkout (core/, training/, export/,
serving/, benchmarks/, pipeline/) and installs as ``ganserve.<layer>`` (pyproject.toml maps them); ganserve/ holds
only the package's ``__init__`` (its version). ``FOLDERS`` says which folder holds which package.
"""

from __future__ import annotations

LAYERS = ("core", "training", "export", "serving", "benchmarks", "pipeline")
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},  # contract, errors, machine facts: nothing of ours, never torch
    "training": {"core", "training"},  # applications, networks by name, objectives, data
    "export": {"core", "training", "export"},  # ONNX, parity, variants, repository writer
    "serving": {"core", "serving"},  # never torch, training or export
    "benchmarks": {"core", "training", "export", "serving", "benchmarks"},  # measurement may use the stages
    "pipeline": set(LAYERS),  # ship, demo, the CLI: whole jobs
}
FOLDERS = {"ganserve": "ganserve", "core": "ganserve.core", "training": "ganserve.training",
           "export": "ganserve.export", "serving": "ganserve.serving", "benchmarks": "ganserve.benchmarks",
           "pipeline": "ganserve.pipeline"}  # the checkout's top folders, in the order of the stack


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to (``ganserve`` itself counts as core); None outside ganserve."""
    parts = module.split(".")
    if parts[0] != "ganserve":
        return None
    if len(parts) == 1:
        return "core"
    return parts[1] if parts[1] in LAYERS else None
