"""Repository edge cases through a real server: folders with names the server cannot serve are skipped and listed,
poll mode applies config.pbtxt/model_card.json edits as a new generation (and refuses bad ones once), refuses a
version without a reference set, leaves a model unloaded by model control alone, and gRPC health follows load,
unload and poll."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.core.contract import CARD_FILE, CONFIG_FILE, REFERENCE_FILE
from ganserve.serving.proto.ganserve.v1 import images_pb2, images_pb2_grpc
from ganserve.serving.proto.inference.grpc_service_pb2 import RepositoryIndexRequest
from ganserve.serving.proto.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from ganserve.serving.server import ServerThread
from local_server import server_config
from test_poll import _wait
from versioned_models import expected, write_version

X = np.linspace(-1, 1, 3 * 4 * 4, dtype=np.float32).reshape(1, 3, 4, 4)
BAD = "bad name!"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
POLL_RULE = "poll mode serves only versions that pass their reference check"


def _client(port: int) -> tg.InferenceServerClient:
    return tg.InferenceServerClient(f"127.0.0.1:{port}")


def _infer(port: int, name: str = "scaled") -> tuple[str, np.ndarray]:
    tensor = tg.InferInput("lr", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X)
    reply = _client(port).infer(name, [tensor], client_timeout=30)
    return reply.get_response().model_version, reply.as_numpy("hr")


def _index(port: int) -> dict[str, tuple[str, str]]:
    """RepositoryIndex over gRPC: name -> (state, reason)."""
    return {m.name: (m.state, m.reason) for m in _client(port).get_model_repository_index().models}


def _http_index(port: int, ready: bool = False) -> dict[str, dict]:
    """POST /v2/repository/index: name -> entry."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index",
                                     data=json.dumps({"ready": ready}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        return {m["name"]: m for m in json.loads(answer.read())}


def _reason(port: int, name: str = "scaled") -> str:
    return _index(port).get(name, ("", ""))[1]


def _health(port: int, service: str) -> int | None:
    """grpc.health.v1 status of one service (None: the server does not know the service)."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                             timeout=10).status
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise


def _metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def _polls(seconds: float = 1.0) -> None:
    """Let several 0.2 s polls pass."""
    time.sleep(seconds)


def _write_atomically(path: Path, text: str) -> None:
    """Replace a file the way an operator should: a temp file beside it, then one rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _version_without_reference(repo: Path, name: str, version: int, stage: Path) -> None:
    """A version folder with no reference.npz, staged outside the repository and renamed in (the model folder's card
    and config are copied first if missing)."""
    write_version(stage, name, version)
    (stage / name / str(version) / REFERENCE_FILE).unlink()
    (repo / name).mkdir(parents=True, exist_ok=True)
    for file in (CARD_FILE, CONFIG_FILE):
        if not (repo / name / file).exists():
            shutil.copy(stage / name / file, repo / name / file)
    os.rename(stage / name / str(version), repo / name / str(version))


def test_a_folder_with_a_bad_name_is_skipped_listed_and_logged_once(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ganserve.serving")
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    shutil.copytree(repo / "scaled", repo / BAD)
    with ServerThread(server_config(repo, poll_seconds=0.2)) as thread:
        assert _infer(thread.port)[0] == "1"
        state, reason = _index(thread.port)[BAD]
        assert state == "UNAVAILABLE" and "invalid model name" in reason and "skipped" in reason
        assert _http_index(thread.http_port)[BAD] == {"name": BAD, "state": "UNAVAILABLE", "reason": reason}
        assert BAD not in _http_index(thread.http_port, ready=True) and "scaled" in _http_index(thread.http_port, True)
        with grpc.insecure_channel(f"127.0.0.1:{thread.port}") as channel:
            ready = GRPCInferenceServiceStub(channel).RepositoryIndex(RepositoryIndexRequest(ready=True), timeout=10)
        assert [m.name for m in ready.models] == ["scaled"]

        later = "later bad?"  # a second one appears while polling
        shutil.copytree(repo / "scaled", repo / later)
        _wait(lambda: later in _index(thread.port), "the new bad folder in the index")
        _polls()
        assert _index(thread.port)[later][0] == "UNAVAILABLE" and _infer(thread.port)[0] == "1"
        assert _health(thread.port, BAD) is None and _health(thread.port, "scaled") == SERVING
        metrics = _metrics(thread.metrics_port)
        assert BAD not in metrics and later not in metrics

        shutil.rmtree(repo / later)
        _wait(lambda: later not in _index(thread.port), "the removed bad folder to leave the index")
    for folder in (BAD, later):
        said = [r for r in caplog.records if repr(folder) in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.WARNING, [r.getMessage() for r in said]
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


def test_config_and_card_edits_load_a_new_generation_and_bad_edits_are_refused_once(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="ganserve.serving")
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    config_path, card_path = repo / "scaled" / CONFIG_FILE, repo / "scaled" / CARD_FILE
    good_config = config_path.read_text()
    assert "max_batch_size: 8" in good_config
    with ServerThread(server_config(repo, poll_seconds=0.2)) as thread:
        client = _client(thread.port)
        first = thread.server.models.get("scaled")[1]
        assert client.get_model_config("scaled").config.max_batch_size == 8

        _write_atomically(config_path, "max_batch_size: {{{ not a config\n")
        _wait(lambda: "refused" in _reason(thread.port), "the bad config edit to be refused")
        assert "config.pbtxt/model_card.json edit refused, still serving [1]" in _reason(thread.port)
        assert "not a valid model config" in _reason(thread.port)
        _polls()  # not tried again while the files stay as they are
        assert 'ganserve_poll_refused_total{model="scaled"} 1.0' in _metrics(thread.metrics_port)
        assert len([r for r in caplog.records if "not a valid model config" in r.getMessage()
                    and r.levelno == logging.ERROR]) == 1
        version, y = _infer(thread.port)
        assert version == "1" and np.array_equal(y, expected(X, 1))
        assert thread.server.models.get("scaled")[1] is first

        _write_atomically(config_path, good_config.replace("max_batch_size: 8", "max_batch_size: 4"))
        _wait(lambda: client.get_model_config("scaled").config.max_batch_size == 4, "the new config to serve")
        second = thread.server.models.get("scaled")[1]
        assert second is not first and second.version == 1  # a new generation of the same version
        assert _reason(thread.port) == ""
        _wait(lambda: first.batcher.closed, "the old generation to close")
        version, y = _infer(thread.port)
        assert version == "1" and np.array_equal(y, expected(X, 1))

        card = json.loads(card_path.read_text())
        _write_atomically(card_path, "{ not json")
        _wait(lambda: "refused" in _reason(thread.port), "the bad card edit to be refused")
        assert "unreadable model card" in _reason(thread.port)
        assert thread.server.models.get("scaled")[1] is second and _infer(thread.port)[0] == "1"

        _write_atomically(card_path, json.dumps({**card, "architecture": "nearest-x2-edited"}))
        images = images_pb2_grpc.ImagesStub(grpc.insecure_channel(f"127.0.0.1:{thread.port}"))

        def architecture() -> str:
            listed = images.ListModels(images_pb2.ListModelsRequest(), timeout=10).models
            return next(m.architecture for m in listed if m.name == "scaled")
        _wait(lambda: architecture() == "nearest-x2-edited", "the edited card to serve")
        assert thread.server.models.get("scaled")[1] is not second and _reason(thread.port) == ""
        assert client.get_model_config("scaled").config.max_batch_size == 4  # the config edit stays applied
        assert 'ganserve_poll_refused_total{model="scaled"} 2.0' in _metrics(thread.metrics_port)
        assert _health(thread.port, "scaled") == SERVING


def test_a_version_without_a_reference_set_is_refused_in_poll_mode_only(tmp_path) -> None:
    repo, stage = tmp_path / "repo", tmp_path / "stage"
    _version_without_reference(repo, "scaled", 1, stage)
    with ServerThread(server_config(repo, poll_seconds=0.2)) as thread:
        assert _infer(thread.port)[0] == "1"  # start-up serves it unchecked, as before
        _polls()
        assert _infer(thread.port)[0] == "1" and _reason(thread.port) == ""

        _version_without_reference(repo, "scaled", 2, stage)
        _wait(lambda: "refused" in _reason(thread.port), "version 2 to be refused")
        assert f"version 2 has no reference.npz; {POLL_RULE}" in _reason(thread.port)
        assert "version(s) [2] refused, still serving [1]" in _reason(thread.port)
        version, y = _infer(thread.port)
        assert version == "1" and np.array_equal(y, expected(X, 1))

        write_version(repo, "scaled", 3)  # with its reference set: loads (the policy keeps the latest)
        _wait(lambda: _client(thread.port).get_model_metadata("scaled").versions == ["3"], "version 3 to serve")
        version, y = _infer(thread.port)
        assert version == "3" and np.array_equal(y, expected(X, 3))
        assert _reason(thread.port) == ""

        _version_without_reference(repo, "fresh", 1, stage)  # a new model folder too
        _wait(lambda: "fresh" in _index(thread.port), "the new model in the index")
        state, reason = _index(thread.port)["fresh"]
        assert state == "UNAVAILABLE" and f"version 1 has no reference.npz; {POLL_RULE}" in reason
        assert _health(thread.port, "fresh") == NOT_SERVING


def test_model_control_unload_holds_across_polls_and_health_follows(tmp_path) -> None:
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    with ServerThread(server_config(repo, poll_seconds=0.2, allow_model_control=True)) as thread:
        client = _client(thread.port)
        assert _health(thread.port, "scaled") == SERVING
        client.unload_model("scaled")
        assert _health(thread.port, "scaled") == NOT_SERVING
        _polls()
        write_version(repo, "scaled", 2)  # a change on disk does not bring it back either
        _polls()
        assert not client.is_model_ready("scaled") and _health(thread.port, "scaled") == NOT_SERVING
        state, reason = _index(thread.port)["scaled"]
        assert state == "UNAVAILABLE" and "unloaded by model control" in reason

        client.load_model("scaled")
        assert client.is_model_ready("scaled") and _health(thread.port, "scaled") == SERVING
        assert _infer(thread.port)[0] == "2"
        write_version(repo, "scaled", 3)  # poll mode manages it again
        _wait(lambda: client.get_model_metadata("scaled").versions == ["3"], "version 3 to serve")

        write_version(repo, "other", 1)  # a new model through poll: health SERVING; removed: NOT_SERVING
        _wait(lambda: _health(thread.port, "other") == SERVING, "the new model's health")
        shutil.rmtree(repo / "other")
        _wait(lambda: _health(thread.port, "other") == NOT_SERVING, "the removed model's health")
        _wait(lambda: "other" not in _index(thread.port), "the removed model to leave the index")
        assert _health(thread.port, "other") == NOT_SERVING
        assert _health(thread.port, "") == SERVING


def test_health_follows_model_control_without_poll_mode(tmp_path) -> None:
    repo = tmp_path / "repo"
    write_version(repo, "scaled", 1)
    with ServerThread(server_config(repo, allow_model_control=True)) as thread:
        client = _client(thread.port)
        write_version(repo, "added", 1)
        assert _health(thread.port, "added") is None
        client.load_model("added")
        assert _health(thread.port, "added") == SERVING
        client.unload_model("added")
        assert _health(thread.port, "added") == NOT_SERVING
        client.load_model("added")
        assert _health(thread.port, "added") == SERVING and _health(thread.port, "scaled") == SERVING
