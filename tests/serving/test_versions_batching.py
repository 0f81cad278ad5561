"""Serving paths users rely on, through a real server and tritonclient: config.pbtxt's version policies (all,
specific, latest N) and asking for an explicit version; the batching flags wired from the command line to a model;
concurrent requests sharing one network run through the server; --no-batching running them one by one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.utils import InferenceServerException

from ganserve.core.contract import CONFIG_FILE
from ganserve.serving.model_manager import BatchingOverrides
from ganserve.serving.server import ServerThread, start_subprocess
from local_server import server_config
from versioned_models import expected, write_version

X = np.linspace(-1, 1, 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)


def _repo(tmp_path: Path, versions: list[int], policy: str | None) -> Path:
    repo = tmp_path / "repo"
    for v in versions:
        write_version(repo, "scaled", v)
    if policy is not None:
        config = repo / "scaled" / CONFIG_FILE
        text = config.read_text()
        assert "version_policy: { latest: { num_versions: 1 } }" in text
        config.write_text(text.replace("version_policy: { latest: { num_versions: 1 } }", f"version_policy: {policy}"))
    return repo


def _infer(client: tg.InferenceServerClient, version: str = "", x: np.ndarray = X) -> tuple[str, np.ndarray]:
    tensor = tg.InferInput("lr", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    reply = client.infer("scaled", [tensor], model_version=version, client_timeout=30)
    return reply.get_response().model_version, reply.as_numpy("hr")


def _served(client: tg.InferenceServerClient) -> list[str]:
    return client.get_model_metadata("scaled").versions


@pytest.mark.parametrize("policy, versions, served", [
    ("{ all: {} }", [1, 2, 3], ["1", "2", "3"]),
    ("{ specific: { versions: [1, 3] } }", [1, 2, 3], ["1", "3"]),
    ("{ latest: { num_versions: 2 } }", [1, 2, 3], ["2", "3"]),
    (None, [1, 2, 3], ["3"]),  # the default written by the export: the latest one
])
def test_version_policies_and_explicit_versions(tmp_path, policy, versions, served) -> None:
    with ServerThread(server_config(_repo(tmp_path, versions, policy))) as thread:
        client = tg.InferenceServerClient(f"127.0.0.1:{thread.port}")
        assert _served(client) == served
        for v in served:  # each version asked for by number answers as itself
            assert client.is_model_ready("scaled", v)
            version, y = _infer(client, v)
            assert version == v and np.array_equal(y, expected(X, int(v)))
        version, y = _infer(client)  # no version: the highest served
        assert version == served[-1] and np.array_equal(y, expected(X, int(served[-1])))
        for v in {"1", "2", "3"} - set(served):
            assert not client.is_model_ready("scaled", v)
            with pytest.raises(InferenceServerException) as info:
                _infer(client, v)
            assert "StatusCode.NOT_FOUND" in str(info.value.status()) and f"no loaded version '{v}'" in info.value.message()
            assert f"loaded: {', '.join(served)}" in info.value.message()
        with pytest.raises(InferenceServerException) as info:
            _infer(client, "latest")
        assert "no loaded version 'latest'" in info.value.message()


def test_specific_version_missing_on_disk_makes_the_model_unavailable(tmp_path) -> None:
    repo = _repo(tmp_path, [1, 2], "{ specific: { versions: [2, 5] } }")
    with ServerThread(server_config(repo)) as thread:
        client = tg.InferenceServerClient(f"127.0.0.1:{thread.port}")
        assert not client.is_model_ready("scaled")
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["scaled"].state == "UNAVAILABLE" and "versions [5] in version_policy are not on disk" in \
            index["scaled"].reason


def _concurrent(port: int, count: int) -> list[tuple[str, np.ndarray]]:
    """`count` requests at once from their own clients (rows differ so a mixed-up batch would show)."""
    results: list = [None] * count
    barrier = threading.Barrier(count)

    def one(i: int) -> None:
        client = tg.InferenceServerClient(f"127.0.0.1:{port}")
        barrier.wait()
        results[i] = _infer(client, "", X + i)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def _counts(client: tg.InferenceServerClient) -> tuple[int, int]:
    stats = client.get_inference_statistics("scaled").model_stats[0]
    return stats.inference_count, stats.execution_count


def test_batching_flags_from_the_command_line_and_shared_runs(tmp_path) -> None:
    """`ganserve serve --max-batch-size 2 --max-queue-delay-us 400000`: the model's config says 2, and 4 requests sent
    at once run as 2 network runs of 2 rows, each answer its own row's."""
    repo = _repo(tmp_path, [1], None)
    child = start_subprocess(repo, ["--max-batch-size", "2", "--max-queue-delay-us", "400000",
                                    "--intra-op-threads", "1"])
    try:
        client = tg.InferenceServerClient(f"127.0.0.1:{child.port}")
        config = client.get_model_config("scaled").config
        assert config.max_batch_size == 2
        assert config.dynamic_batching.max_queue_delay_microseconds == 400000
        results = _concurrent(child.port, 4)
        for i, (version, y) in enumerate(results):
            assert version == "1" and np.array_equal(y, expected(X + i, 1))
        assert _counts(client) == (4, 2)
        with pytest.raises(InferenceServerException) as info:  # the override is the model's limit, as config says
            _infer(client, "", np.zeros((3, 3, 4, 4), np.float32))
        assert "batch size 3 outside 1..2 (max_batch_size)" in info.value.message()
    finally:
        child.proc.terminate()
        child.proc.wait(30)


def test_no_batching_runs_each_request_alone(tmp_path) -> None:
    repo = _repo(tmp_path, [1], None)
    config = server_config(repo, batching=BatchingOverrides(disabled=True, max_queue_delay_us=400000))
    with ServerThread(config) as thread:
        client = tg.InferenceServerClient(f"127.0.0.1:{thread.port}")
        assert not client.get_model_config("scaled").config.HasField("dynamic_batching")
        results = _concurrent(thread.port, 4)
        for i, (_, y) in enumerate(results):
            assert np.array_equal(y, expected(X + i, 1))
        assert _counts(client) == (4, 4)


def test_default_batching_shares_a_run_between_concurrent_requests(tmp_path) -> None:
    """Without overrides (config.pbtxt's dynamic batching) concurrent requests through the server share runs."""
    repo = _repo(tmp_path, [1], None)
    with ServerThread(server_config(repo, batching=BatchingOverrides(max_queue_delay_us=400000))) as thread:
        client = tg.InferenceServerClient(f"127.0.0.1:{thread.port}")
        results = _concurrent(thread.port, 4)
        for i, (_, y) in enumerate(results):
            assert np.array_equal(y, expected(X + i, 1))
        inferences, executions = _counts(client)
        assert inferences == 4 and executions <= 2  # config.pbtxt's preferred sizes are 2, 4, 8: runs of 2 or 4
