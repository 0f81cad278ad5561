"""Fixtures: a temp model repository of tiny ONNX models, and a running server on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganserve.serving.server import ServerThread
from local_server import server_config
from serving_models import make_repo


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repo(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="session")
def server(repo: Path):
    """A server on a free 127.0.0.1 port shared by the tests of a session (stopped at the end)."""
    thread = ServerThread(server_config(repo, max_message_mb=2))
    thread.start()
    yield thread
    thread.stop()
