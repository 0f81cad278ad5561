"""The server settings every test uses: 127.0.0.1, free ports, one ORT thread, a short drain (tests/ is on sys.path)."""

from __future__ import annotations

from pathlib import Path

from serving.server import ServerConfig


def server_config(repo: Path, **kw) -> ServerConfig:
    """A ServerConfig for ``repo`` on free loopback ports with one intra-op thread; ``kw`` sets top-level fields."""
    cfg = ServerConfig(repo=repo, port=0, metrics_port=0, grace_seconds=5)
    cfg.runtime.intra_op_threads = 1
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg
