"""Poll mode: a new version folder is picked up, a broken one (or one that fails its reference check) is refused
while the old one keeps serving, and a replaced version is unloaded only after its last in-flight request."""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from ganserve.serving.model_manager import BatchingOverrides
from ganserve.serving.server import ServerThread
from local_server import server_config
from versioned_models import expected, write_version

X = np.linspace(-1, 1, 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)


def _infer(port: int, version: str = "", x: np.ndarray = X) -> tuple[str, np.ndarray]:
    client = tg.InferenceServerClient(f"127.0.0.1:{port}")
    tensor = tg.InferInput("lr", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    reply = client.infer("scaled", [tensor], model_version=version, client_timeout=30)
    return reply.get_response().model_version, reply.as_numpy("hr")


def _wait(condition, what: str, seconds: float = 30.0) -> None:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _versions(port: int) -> list[str]:
    return tg.InferenceServerClient(f"127.0.0.1:{port}").get_model_metadata("scaled").versions


def _reason(port: int) -> str:
    index = tg.InferenceServerClient(f"127.0.0.1:{port}").get_model_repository_index().models
    return next(m.reason for m in index if m.name == "scaled")


def test_new_version_is_picked_up_and_bad_ones_are_refused(tmp_path) -> None:
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    with ServerThread(server_config(repo, poll_seconds=0.2)) as thread:
        version, y = _infer(thread.port)
        assert version == "1" and np.array_equal(y, expected(X, 1))
        write_version(repo, "scaled", 2)
        _wait(lambda: _versions(thread.port) == ["2"], "version 2 to serve")
        version, y = _infer(thread.port)
        assert version == "2" and np.array_equal(y, expected(X, 2))
        with pytest.raises(InferenceServerException) as info:  # the policy (latest 1) dropped version 1
            _infer(thread.port, "1")
        assert "no loaded version '1'" in info.value.message()

        write_version(repo, "scaled", 3, broken=True)
        _wait(lambda: "refused" in _reason(thread.port), "version 3 to be refused")
        assert "[3]" in _reason(thread.port) and "still serving [2]" in _reason(thread.port)
        assert _infer(thread.port)[0] == "2" and _versions(thread.port) == ["2"]

        shutil.rmtree(repo / "scaled" / "3")
        write_version(repo, "scaled", 4, wrong_reference=True)
        _wait(lambda: "[4]" in _reason(thread.port), "version 4 to be refused")
        assert "reference check" in _reason(thread.port)
        version, y = _infer(thread.port)
        assert version == "2" and np.array_equal(y, expected(X, 2))
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{thread.metrics_port}/metrics", timeout=10).read().decode()
        assert 'ganserve_poll_refused_total{model="scaled"} 2.0' in metrics

        shutil.rmtree(repo / "scaled")
        _wait(lambda: not tg.InferenceServerClient(f"127.0.0.1:{thread.port}").is_model_ready("scaled"),
              "the removed model to be unloaded")


def test_a_replaced_version_closes_only_after_its_last_request(tmp_path) -> None:
    """A request waits 2.5 s in version 1's queue while version 2 takes over: it is answered by version 1."""
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    config = server_config(repo, poll_seconds=0.2,
                           batching=BatchingOverrides(max_queue_delay_us=2_500_000))
    with ServerThread(config) as thread:
        _, old = thread.server.models.get("scaled")

        async def scenario() -> tuple[tuple[str, np.ndarray], bool, int, bool]:
            pending = asyncio.ensure_future(asyncio.to_thread(_infer, thread.port))
            await asyncio.to_thread(_wait, lambda: old.leases == 1, "the request to hold version 1")
            write_version(repo, "scaled", 2)
            await asyncio.to_thread(_wait, lambda: thread.server.models.get("scaled")[1].version == 2, "version 2")
            closed_while_held, leases = old.batcher.closed, old.leases
            answer = await pending
            return answer, closed_while_held, leases, True

        (version, y), closed_while_held, leases, _ = asyncio.run(scenario())
        assert (version, closed_while_held, leases) == ("1", False, 1)
        assert np.array_equal(y, expected(X, 1))
        _wait(lambda: old.batcher.closed, "version 1 to close after its last request")
        assert _infer(thread.port)[0] == "2"
