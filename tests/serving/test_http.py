"""KServe v2 REST and the image API over HTTP: tritonclient.http (sync and aio) unchanged, JSON and binary tensors,
every error class with its HTTP status, answers equal to gRPC's for the same input, limits before the body is read,
metrics for both protocols."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
import tritonclient.http.aio as tha
from tritonclient.utils import InferenceServerException

from ganserve.serving.model_manager import BatchingOverrides
from ganserve.serving.proto.ganserve.v1 import images_pb2, images_pb2_grpc
from ganserve.serving.server import ServerThread
from local_server import server_config
from test_imaging import bomb_png, png_bytes

rng = np.random.default_rng(7)
PICTURE = png_bytes(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))


def _url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.http_port}{path}"


def _http(server, path: str, body: bytes | None = None, headers: dict | None = None,
          method: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one request; errors are answers too."""
    request = urllib.request.Request(_url(server, path), data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as reply:
            return reply.status, dict(reply.headers), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _infer_body(shape=(1, 3, 4, 4), datatype="FP32", binary: bytes | None = None, **extra) -> tuple[bytes, dict]:
    """A v2 infer body for sr2's input 'lr' with its raw bytes appended (binary extension)."""
    data = np.zeros(shape, np.float32).tobytes() if binary is None else binary
    header = json.dumps({"inputs": [{"name": "lr", "shape": list(shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": len(data)}}], **extra}).encode()
    return header + data, {"Inference-Header-Content-Length": str(len(header)),
                           "Content-Type": "application/octet-stream"}


def _good(server) -> None:
    """A valid request right after a bad one answers normally."""
    x = np.full((1, 3, 4, 4), 0.5, np.float32)
    client = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    got = th.InferInput("lr", [1, 3, 4, 4], "FP32")
    got.set_data_from_numpy(x)
    assert np.array_equal(client.infer("sr2", [got]).as_numpy("hr"), x.repeat(2, 2).repeat(2, 3))


# -- tritonclient.http unchanged -----------------------------------------------------------------------------------
def test_tritonclient_http_metadata_config_index_stats(server) -> None:
    client = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("sr2") and client.is_model_ready("sr2", "1")
    assert not client.is_model_ready("broken") and not client.is_model_ready("sr2", "9")
    meta = client.get_server_metadata()
    assert meta["name"] == "ganserve" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("sr2")
    assert model["inputs"] == [{"name": "lr", "datatype": "FP32", "shape": [-1, 3, -1, -1]}]
    assert model["versions"] == ["1"] and client.get_model_metadata("sr2", "1") == model
    config = client.get_model_config("sr2")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [3, -1, -1]  # numbers, not strings
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["sr2"]["state"] == "READY" and index["broken"]["state"] == "UNAVAILABLE"
    assert "onnxruntime cannot load" in index["broken"]["reason"]
    before = client.get_inference_statistics("sr2")["model_stats"][0]
    _good(server)
    after = client.get_inference_statistics("sr2")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert after["execution_count"] == before["execution_count"] + 1


@pytest.mark.parametrize("binary_in, binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_tritonclient_http_infer_json_and_binary(server, repo, binary_in: bool, binary_out: bool) -> None:
    x = rng.uniform(-1, 1, (2, 3, 4, 8)).astype(np.float32)
    client = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = th.InferInput("lr", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    reply = client.infer("sr2", [tensor], outputs=[th.InferRequestedOutput("hr", binary_data=binary_out)],
                         request_id="r-1")
    session = ort.InferenceSession(str(repo / "sr2" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert np.array_equal(reply.as_numpy("hr"), session.run(None, {"lr": x})[0])
    assert reply.get_response()["id"] == "r-1" and reply.get_response()["model_version"] == "1"
    assert ("data" in reply.get_output("hr")) == (not binary_out)


def test_tritonclient_http_aio_infer_and_typed_outputs(server) -> None:
    async def scenario() -> tuple[np.ndarray, np.ndarray, bool]:
        client = tha.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        try:
            ready = await client.is_server_ready()
            x = np.eye(4, dtype=np.float32)[None, None].repeat(3, 0)
            tensor = tha.InferInput("pixels", [3, 1, 4, 4], "FP32")
            tensor.set_data_from_numpy(x)
            binary = (await client.infer("digits", [tensor])).as_numpy("probs")
            tensor.set_data_from_numpy(x, binary_data=False)
            typed = (await client.infer("digits", [tensor], outputs=[tha.InferRequestedOutput("probs", binary_data=False)])
                     ).as_numpy("probs")
            return binary, typed, ready
        finally:
            await client.close()

    binary, typed, ready = asyncio.run(scenario())
    grpc_client = tg.InferenceServerClient(f"127.0.0.1:{server.port}")
    tensor = tg.InferInput("pixels", [3, 1, 4, 4], "FP32")
    tensor.set_data_from_numpy(np.eye(4, dtype=np.float32)[None, None].repeat(3, 0))
    expected = grpc_client.infer("digits", [tensor]).as_numpy("probs")
    assert ready and binary.shape == (3, 3)
    assert np.array_equal(binary, expected) and np.array_equal(typed, expected)


def test_outputs_default_to_json_unless_binary_data_output(server) -> None:
    body, headers = _infer_body()
    status_, reply_headers, reply = _http(server, "/v2/models/sr2/infer", body, headers)
    assert status_ == 200 and "Inference-Header-Content-Length" not in reply_headers
    assert json.loads(reply)["outputs"][0]["data"] == [0.0] * (3 * 8 * 8)
    body, headers = _infer_body(parameters={"binary_data_output": True})
    status_, reply_headers, reply = _http(server, "/v2/models/sr2/infer", body, headers)
    length = int(reply_headers["Inference-Header-Content-Length"])
    header = json.loads(reply[:length])
    assert status_ == 200 and header["outputs"][0]["parameters"]["binary_data_size"] == 3 * 8 * 8 * 4
    assert len(reply) == length + 3 * 8 * 8 * 4 and not any(reply[length:])


def test_typed_json_inputs_need_no_binary_header(server) -> None:
    body = json.dumps({"inputs": [{"name": "lr", "shape": [1, 3, 1, 1], "datatype": "FP32",
                                   "data": [[[[0.25]], [[0.5]], [[-1.0]]]]}]}).encode()
    status_, _, reply = _http(server, "/v2/models/sr2/versions/1/infer", body, {"Content-Type": "application/json"})
    out = json.loads(reply)["outputs"][0]
    assert status_ == 200 and out["shape"] == [1, 3, 2, 2]
    assert out["data"] == [0.25] * 4 + [0.5] * 4 + [-1.0] * 4


# -- every error class, then a good request ---------------------------------------------------------------------------
def _json_header(payload: dict) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize("path, body, headers, code, words", [
    ("/v2/models/sr2/infer", *_infer_body(datatype="FP16"), 400, "datatype"),
    ("/v2/models/sr2/infer", *_infer_body(shape=(1, 4, 4, 4), binary=b"\0" * 256), 400, "shape"),
    ("/v2/models/sr2/infer", *_infer_body(shape=(9, 3, 4, 4), binary=b"\0" * 9 * 192), 400, "batch size"),
    ("/v2/models/sr2/infer", *_infer_body(binary=b"\0" * 7), 400, "bytes"),
    ("/v2/models/sr2/infer", b"{not json", {}, 400, "does not parse"),
    ("/v2/models/sr2/infer", _json_header({"inputs": []}), {}, 400, "non-empty array"),
    ("/v2/models/sr2/infer", _json_header({"inputs": [{"name": "lr", "datatype": "FP32", "shape": ["a"]}]}), {}, 400,
     "array of integers"),
    ("/v2/models/sr2/infer", _json_header({"inputs": [{"name": "lr", "datatype": "FP32", "shape": [1, 3, 1, 1],
                                                       "data": ["x", "y", "z"]}]}), {}, 400, "FP32 values"),
    ("/v2/models/sr2/infer", _json_header({"inputs": [{"name": "lr", "datatype": "FP32", "shape": [1, 3, 1, 1],
                                                       "data": [1, 2]}]}), {}, 400, "bytes for shape"),
    ("/v2/models/sr2/infer", _json_header({"inputs": [{"name": "lr", "datatype": "BYTES", "shape": [1],
                                                       "data": ["a"]}]}), {}, 400, "BYTES"),
    ("/v2/models/sr2/infer", _infer_body()[0], {"Inference-Header-Content-Length": "999999"}, 400,
     "Inference-Header-Content-Length"),
    ("/v2/models/sr2/infer", _infer_body()[0] + b"\0\0", _infer_body()[1], 400, "binary bytes after"),
    ("/v2/models/sr2/infer", *_infer_body(outputs=[{"name": "hr", "parameters": {"classification": 2}}]), 400,
     "classification"),
    ("/v2/models/sr2/infer", *_infer_body(outputs=[{"name": "nope"}]), 400, "unknown output"),
    ("/v2/models/sr2/infer", *_infer_body(parameters={"timeout": -3}), 400, "timeout"),
    ("/v2/models/nope/infer", *_infer_body(), 404, "unknown model"),
    ("/v2/models/sr2/versions/7/infer", *_infer_body(), 404, "no loaded version"),
    ("/v2/models/broken/infer", *_infer_body(), 400, "not available"),
    ("/v2/models/nope", None, {}, 404, "unknown model"),
    ("/v2/models/nope/config", None, {}, 404, "unknown model"),
    ("/v2/nowhere", None, {}, 404, "Not Found"),
    ("/v2/repository/models/sr2/load", b"", {}, 400, "--allow-model-control"),
    ("/v2/repository/models/sr2/unload", b"", {}, 400, "--allow-model-control"),
    ("/v2/models/sr2/infer", *_infer_body(shape=(1, 3, 512, 512)), 413, "limit"),  # 3 MB > the fixture's 2 MB
    ("/v1/models/sr2/transform", b"\x89PNG garbage", {}, 400, "undecodable"),
    ("/v1/models/sr2/transform", bomb_png(60_000, 60_000), {}, 413, "limit"),
    ("/v1/models/sr2/transform?tile_size=8&tile_overlap=4", PICTURE, {}, 400, "tile_overlap"),
    ("/v1/models/sr2/transform?tile_size=4&tile_overlap=1", PICTURE, {}, 400, "multiples of 4"),
    ("/v1/models/sr2/transform?format=gif", PICTURE, {}, 400, "png or jpeg"),
    ("/v1/models/sr2/transform?quality=x", PICTURE, {}, 400, "integer"),
    ("/v1/models/digits/transform", PICTURE, {}, 400, "call Classify"),
    ("/v1/models/aging/transform?age=ancient", PICTURE, {}, 400, "young, adult, old"),
    ("/v1/models/aging/transform", PICTURE, {}, 400, "age"),
    ("/v1/models/sr2/transform?colour=red", PICTURE, {}, 400, "colour"),
    ("/v1/models/digits/classify?seed=3", PICTURE, {}, 400, "seed"),
    ("/v1/models/sr2/classify", PICTURE, {}, 400, "call Transform"),
    ("/v1/models/nope/transform", PICTURE, {}, 404, "unknown model"),
    ("/v1/models/sr2/transform", b"", {}, 400, "empty image"),
    ("/v1/models/sr2/generate?seed=1", None, {}, 400, "call Transform"),
])
def test_errors_over_http(server, path: str, body: bytes | None, headers: dict, code: int, words: str) -> None:
    status_, reply_headers, reply = _http(server, path, body, headers, method="POST" if body is not None else "GET")
    assert status_ == code, reply
    assert reply_headers["Content-Type"].startswith("application/json")
    assert words in json.loads(reply)["error"]
    _good(server)


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server) -> None:
    """413 comes back while the client has sent only the headers of a 100 MB body."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v1/models/sr2/transform HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                     b"Content-Length: 100000000\r\n\r\n")
        start = time.monotonic()
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413") and time.monotonic() - start < 5
    assert b"limit" in head
    _good(server)


def test_wrong_method_is_405_with_allow(server) -> None:
    status_, headers, reply = _http(server, "/v2/models/sr2/infer", method="GET")
    assert status_ == 405 and "POST" in headers["Allow"] and json.loads(reply)["error"]


@pytest.fixture(scope="module")
def slow_server(repo):
    """Batches wait up to 1.5 s to fill and the queue holds 2 requests: deadlines and queue limits show."""
    thread = ServerThread(server_config(repo, batching=BatchingOverrides(max_queue_delay_us=1_500_000, max_queue_size=2)))
    thread.start()
    yield thread
    thread.stop()


def test_deadline_in_the_queue_is_504_and_a_full_queue_is_429(slow_server) -> None:
    body, headers = _infer_body(parameters={"timeout": 300_000})  # 0.3 s, in microseconds as tritonclient sends it
    status_, _, reply = _http(slow_server, "/v2/models/sr2/infer", body, headers)
    assert status_ == 504 and "deadline" in json.loads(reply)["error"]

    async def burst() -> list[int]:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async def one(size: int) -> int:  # different sizes never share a batch: each waits its queue delay
                data, hdrs = _infer_body(shape=(1, 3, size, size))
                async with session.post(_url(slow_server, "/v2/models/sr2/infer"), data=data, headers=hdrs) as r:
                    await r.read()
                    return r.status
            return list(await asyncio.gather(*(one(size) for size in (4, 8, 12, 16))))

    codes = asyncio.run(burst())
    assert sorted(codes) == [200, 200, 429, 429]


def test_shutting_down_is_503_and_not_ready(server) -> None:
    server.server.gate.closing = True  # the switch SIGTERM throws first (GanServer.stop)
    try:
        status_, _, reply = _http(server, "/v2/models/sr2/infer", *_infer_body())
        ready, _, _ = _http(server, "/v2/health/ready")
        model_ready, _, _ = _http(server, "/v2/models/sr2/ready")
        live, _, _ = _http(server, "/v2/health/live")
    finally:
        server.server.gate.closing = False
    assert status_ == 503 and "shutting down" in json.loads(reply)["error"]
    assert (ready, model_ready, live) == (503, 503, 200)
    _good(server)


# -- the image API over HTTP equals the gRPC one ------------------------------------------------------------------
def _grpc_images(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, images_pb2_grpc.ImagesStub(channel)


def test_transform_over_http_equals_grpc(server) -> None:
    status_, headers, reply = _http(server, "/v1/models/sr2/transform?tile_size=8&tile_overlap=2", PICTURE,
                                    {"Content-Type": "image/png"})
    channel, images = _grpc_images(server)
    with channel:
        expected = images.Transform(images_pb2.TransformRequest(
            model="sr2", image=PICTURE, options=images_pb2.ImageOptions(tile_size=8, tile_overlap=2)), timeout=10)
    assert status_ == 200 and headers["Content-Type"] == "image/png"
    assert reply == expected.image
    assert (headers["X-Ganserve-Width"], headers["X-Ganserve-Height"]) == ("32", "24")
    assert int(headers["X-Ganserve-Runs"]) == expected.tiles > 1
    stages = dict(part.strip().split(";dur=") for part in headers["Server-Timing"].split(","))
    assert set(stages) == {"decode", "infer", "encode", "total"}
    assert float(stages["total"]) >= float(stages["infer"]) > 0


def test_conditions_jpeg_and_multipart_over_http(server) -> None:
    channel, images = _grpc_images(server)
    with channel:
        expected = images.Transform(images_pb2.TransformRequest(
            model="aging", image=PICTURE, conditions={"age": "old"},
            options=images_pb2.ImageOptions(output_format=images_pb2.JPEG, jpeg_quality=80)), timeout=10)
    status_, headers, reply = _http(server, "/v1/models/aging/transform?age=old&format=jpeg&quality=80", PICTURE)
    assert status_ == 200 and headers["Content-Type"] == "image/jpeg" and reply == expected.image
    boundary = "ganserve-test-boundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + PICTURE + (
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"condition.age\"\r\n\r\nold\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"format\"\r\n\r\njpeg\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"quality\"\r\n\r\n80\r\n--{boundary}--\r\n").encode()
    status_, _, reply = _http(server, "/v1/models/aging/transform", form,
                              {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status_ == 200 and reply == expected.image


def test_classify_over_http_equals_grpc(server) -> None:
    status_, _, reply = _http(server, "/v1/models/digits/classify?top_k=2", PICTURE)
    channel, images = _grpc_images(server)
    with channel:
        expected = images.Classify(images_pb2.ClassifyRequest(model="digits", image=PICTURE, top_k=2), timeout=10)
    scores = json.loads(reply)["scores"]
    assert status_ == 200 and len(scores) == 2
    assert [(s["label"], s.get("index", 0)) for s in scores] == [(s.label, s.index) for s in expected.scores]
    assert [s["probability"] for s in scores] == pytest.approx([s.probability for s in expected.scores], abs=1e-7)


def test_listing_for_the_page(server) -> None:
    status_, _, reply = _http(server, "/v1/models")
    models = {m["name"]: m for m in json.loads(reply)["models"]}
    assert status_ == 200 and models["sr2"]["rpc"] == "Transform" and models["digits"]["rpc"] == "Classify"
    assert models["aging"]["conditions"] == [{"name": "age", "choices": ["young", "adult", "old"], "required": True}]
    chosen = [c for c in models["sr2"]["choice"]["candidates"] if c["status"] == "chosen"]
    assert len(chosen) == 1 and chosen[0]["precision"] == models["sr2"]["precision"]
    assert models["broken"]["state"] == "UNAVAILABLE" and "choice" not in models["broken"]
    assert models["sr2"]["example"] is True and models["digits"]["example"] is False
    status_, headers, example = _http(server, "/v1/models/sr2/example")
    assert status_ == 200 and headers["Content-Type"] == "image/png" and example.startswith(b"\x89PNG")
    status_, _, reply = _http(server, "/v1/models/digits/example")
    assert status_ == 404 and "example" in json.loads(reply)["error"]


def test_metrics_count_both_protocols_and_stages(server) -> None:
    _http(server, "/v1/models/sr2/transform", PICTURE)
    channel, images = _grpc_images(server)
    with channel:
        images.Transform(images_pb2.TransformRequest(model="sr2", image=PICTURE), timeout=10)
    status_, _, text = _http(server, "/metrics")
    lines = dict(line.rsplit(" ", 1) for line in text.decode().splitlines() if line and not line.startswith("#"))
    assert status_ == 200
    assert float(lines['ganserve_requests_total{code="OK",method="Transform",model="sr2",protocol="http"}']) >= 1
    assert float(lines['ganserve_requests_total{code="OK",method="Transform",model="sr2",protocol="grpc"}']) >= 1
    assert float(lines['ganserve_stage_seconds_count{model="sr2",stage="decode"}']) >= 2
    assert float(lines['ganserve_stage_seconds_count{model="sr2",stage="encode"}']) >= 2
    assert lines['ganserve_queue_depth{model="sr2"}'] == "0.0"


def test_http_port_off(repo) -> None:
    with ServerThread(server_config(repo, http_port=-1)) as thread:
        assert thread.http_port == -1
        assert tg.InferenceServerClient(f"127.0.0.1:{thread.port}").is_server_ready()


def test_tritonclient_http_error_is_an_exception_with_the_message(server) -> None:
    client = th.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    tensor = th.InferInput("lr", [1, 3, 4, 4], "FP16")
    tensor.set_data_from_numpy(np.zeros((1, 3, 4, 4), np.float16))
    with pytest.raises(InferenceServerException) as info:
        client.infer("sr2", [tensor])
    assert "datatype 'FP16'" in info.value.message() and info.value.status() == "400"
