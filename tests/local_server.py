"""The server settings every test uses: 127.0.0.1, free ports, one ORT thread, a short drain (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

from ganserve.serving.runtime import OrtRunner
from ganserve.serving.server import ServerConfig


def server_config(repo: Path, **kw) -> ServerConfig:
    """A ServerConfig for ``repo`` on free loopback ports with one intra-op thread; ``kw`` sets top-level fields."""
    cfg = ServerConfig(repo=repo, port=0, http_port=0, metrics_port=0, grace_seconds=5)
    cfg.runtime.intra_op_threads = 1
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def chosen_runner(server, name: str, version: str = ""):
    """A fresh in-process OrtRunner for the candidate the running server chose for ``name`` (same provider,
    precision, model file and thread settings), so served output can be compared with in-process output exactly
    whichever ONNX Runtime flavour is installed."""
    _, served = server.server.models.get(name, version)
    return OrtRunner(served.choice.candidate.path, server.config.runtime, served.choice.candidate)
