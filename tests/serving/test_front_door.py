"""The front door under attack or carelessness, on a real server: authorization by the matched route whatever the
path's encoding (HTTP) or method name (gRPC), metrics behind the token on both ports, metric series bounded under
random model names, slow and idle HTTP clients cut off, and the connection and RPC caps with health still answering."""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import socket
import string
import threading
import time
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ganserve.serving.limits import Limits
from ganserve.serving.metrics import UNKNOWN_MODEL
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
from ganserve.serving.server import ServerThread, start_subprocess
from local_server import server_config
from test_security import BEARER, EXPECTED, TOKEN, _infer_grpc

AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODELS = ("sr2", "digits", "aging")


def _start(repo: Path, tmp: Path, **limits) -> ServerThread:
    token_file = tmp / "tokens"
    token_file.write_text(TOKEN + "\n")
    thread = ServerThread(server_config(repo, auth_token_file=token_file, limits=Limits(**limits)))
    thread.start()
    return thread


@pytest.fixture(scope="module")
def door(repo, tmp_path_factory):
    """A token server with short HTTP timeouts: heads 1 s, bodies 1 s, idle connections 3 s."""
    thread = _start(repo, tmp_path_factory.mktemp("door"), header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=3.0)
    yield thread
    thread.stop()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET with the path sent byte for byte as given (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


# Each path's text can be read as an open one (…/ready, /v2/health/…, /static/…) by some decoding or normalisation.
TRICKS = [
    "/v2/models/sr2%2Fready", "/v2/models/sr2%2fready", "/v2/models/sr2%252Fready", "/v2/models/sr2/ready/",
    "/v2/models/sr2/ready%2F", "/v2//models/sr2", "//v2/models/sr2", "/v2/models/sr2/./ready/../config",
    "/v2/health/ready/../../models/sr2", "/v2/health/ready/%2E%2E/%2E%2E/models/sr2", "/v2/health/live/..%2F..%2Fmodels",
    "/V2/MODELS/SR2", "/v2/Models/sr2", "/v2/models/sr2;/ready", "/v2/models/sr2?x=/ready", "/v2/models/sr2#/ready",
    "/static/..%2Fv2%2Fmodels%2Fsr2", "/static/%2E%2E/v2/models/sr2", "/metrics", "/metrics/", "/metrics%2F",
    "/v2/repository/index", "/v1/models", "/v1/models/", "/v1/models%2F", "/favicon.ico", "/v2/models/stats",
    "/v2/models/sr2/versions/1%2Fready", "/v2/models/%2E%2E/ready",
]


def _open_answer(status: int, body: bytes) -> bool:
    """What an open route may say without a token: readiness or liveness alone, or the page and its files."""
    if status == 401:
        return True
    try:
        value = json.loads(body)
    except ValueError:
        return status == 200 and b"ganserve" in body  # the page or one of its static files
    if isinstance(value, dict) and set(value) == {"error"}:  # the page's file route: no such file
        return status == 404 and value["error"].startswith("no page file")
    return isinstance(value, dict) and set(value) in ({"ready"}, {"live"})


@pytest.mark.parametrize("path", TRICKS)
def test_no_path_trick_reaches_a_protected_route_over_http(door, path: str) -> None:
    status, body = _get(door.http_port, path)
    assert _open_answer(status, body), (path, status, body[:200])
    for name in MODELS:  # nothing about the served models leaks (a 404 elsewhere lists them)
        assert f'"{name}"'.encode() not in body and f"'{name}'".encode() not in body, (path, body[:200])
    with_token, _ = _get(door.http_port, path, AUTH)
    assert with_token != 401, path


def test_the_issue_case_and_the_open_routes(door) -> None:
    assert _get(door.http_port, "/v2/models/x%2Fready")[0] in (401, 503)
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/sr2/ready", "/v2/models/sr2/versions/1/ready",
                 "/", "/static/page.js"):
        assert _get(door.http_port, path)[0] == 200, path
    assert _get(door.http_port, "/v2/models/nope/ready") == (503, b'{"ready": false}')
    for path in ("/v2", "/v2/models/sr2", "/v2/models/sr2/config", "/nothing/here", "/v2/health"):
        assert _get(door.http_port, path)[0] == 401, path


GRPC_TRICKS = [
    "/inference.GRPCInferenceService/ModelMetadata", "/grpc.health.v1.Health/../inference.GRPCInferenceService/ModelMetadata",
    "/grpc.health.v1.Health/Check/../../inference.GRPCInferenceService/ModelMetadata",
    "/inference.grpcinferenceservice/modelmetadata", "//inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService/ModelMetadata/", "/inference.GRPCInferenceService/ServerLive/../ModelMetadata",
    "/grpc.reflection.v1.ServerReflection/x/../../inference.GRPCInferenceService/ModelMetadata",
    "/inference.GRPCInferenceService%2FModelMetadata",
]


@pytest.mark.parametrize("method", GRPC_TRICKS)
def test_no_method_name_trick_reaches_a_protected_rpc(door, method: str) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{door.port}") as channel:
        call = channel.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=pb.ModelMetadataResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            call(pb.ModelMetadataRequest(name="sr2"), timeout=5)
        assert info.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED), method
        with_token = call(pb.ModelMetadataRequest(name="sr2"), timeout=5, metadata=tuple(BEARER.items())) \
            if method == GRPC_TRICKS[0] else None
        assert with_token is None or with_token.name == "sr2"


def _series(text: str) -> set[str]:
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}


def _scrape(port: int, headers: dict[str, str] | None = None) -> tuple[int, str]:
    status, body = _get(port, "/metrics", headers)
    return status, body.decode()


def test_metrics_need_the_token_on_both_ports(door) -> None:
    for port in (door.http_port, door.metrics_port):
        status, body = _scrape(port)
        assert status == 401 and "bearer token" in body and "ganserve_requests" not in body
        status, body = _scrape(port, AUTH)
        assert status == 200 and "ganserve_requests_total" in body
    assert _get(door.metrics_port, "/v2/health/ready")[0] == 404  # the metrics port serves /metrics alone


async def _random_names(door, count: int) -> None:
    """`count` requests naming random models, half over HTTP, half over gRPC, with a valid token."""
    rng = random.Random(7)
    names = ["".join(rng.choices(string.ascii_lowercase + string.digits, k=12)) for _ in range(count)]
    limit = asyncio.Semaphore(32)
    async with aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(limit=16)) as http_session, \
            grpc.aio.insecure_channel(f"127.0.0.1:{door.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def one(i: int, name: str) -> None:
            async with limit:
                if i % 2:
                    async with http_session.get(f"http://127.0.0.1:{door.http_port}/v2/models/{name}") as reply:
                        assert reply.status == 404
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.ModelMetadata(pb.ModelMetadataRequest(name=name), timeout=10,
                                                 metadata=tuple(BEARER.items()))
                    assert info.value.code() == grpc.StatusCode.NOT_FOUND
        await asyncio.gather(*(one(i, name) for i, name in enumerate(names)))


def test_random_model_names_leave_the_series_count_unchanged(door) -> None:
    asyncio.run(_random_names(door, 10))  # the one series every unknown name shares exists from here on
    before = _series(_scrape(door.http_port, AUTH)[1])
    assert any(f'model="{UNKNOWN_MODEL}"' in s for s in before)
    asyncio.run(_random_names(door, 10_000))
    after_text = _scrape(door.http_port, AUTH)[1]
    assert _series(after_text) == before
    counts = [float(line.rsplit(" ", 1)[1]) for line in after_text.splitlines()
              if line.startswith("ganserve_requests_total{") and f'model="{UNKNOWN_MODEL}"' in line]
    assert sum(counts) >= 10_010


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.settimeout(10)
    return sock


def _closed_after(sock: socket.socket) -> float:
    """Seconds until the server closes the connection (reading and dropping whatever it answers first)."""
    start = time.monotonic()
    while sock.recv(65536):
        pass
    return time.monotonic() - start


def test_a_half_sent_head_is_closed_after_the_header_timeout(door) -> None:
    with _connect(door.http_port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # the blank line never comes
        assert 0.5 < _closed_after(sock) < 2.8  # --header-timeout 1 s, well before the 3 s idle timeout


def test_a_trickled_head_is_closed_after_the_header_timeout(door) -> None:
    with _connect(door.http_port) as sock:
        start = time.monotonic()
        closed = None
        for byte in b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = time.monotonic() - start
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                if sock.recv(1) == b"":
                    closed = time.monotonic() - start
                    break
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
        assert closed is not None and closed < 2.8, closed


def test_a_slow_body_is_answered_408_and_closed(door) -> None:
    with _connect(door.http_port) as sock:
        sock.sendall(b"POST /v2/models/sr2/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"inputs\": [")
        start = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        assert time.monotonic() - start < 2.8
        assert answer.startswith(b"HTTP/1.1 408") and b"--body-timeout" in answer


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(door) -> None:
    with _connect(door.http_port) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert 2.0 < _closed_after(sock) < 5.5  # --idle-timeout 3 s


@pytest.fixture(scope="module")
def capped(repo, tmp_path_factory):
    """A token server that holds 2 HTTP connections and 2 gRPC calls at most."""
    thread = _start(repo, tmp_path_factory.mktemp("capped"), max_connections=2, max_rpcs=2)
    yield thread
    thread.stop()


def _keep_alive_get(sock: socket.socket, path: str, headers: bytes = b"") -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + headers + b"\r\n")
    answer = sock.recv(65536)
    return answer


def test_past_the_connection_cap_only_health_answers(capped) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    held = [_connect(capped.http_port) for _ in range(2)]
    try:
        for sock in held:  # two connections in use, kept alive
            assert _keep_alive_get(sock, "/v2/models/sr2", auth).startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        assert _get(capped.http_port, "/v2/models/sr2", AUTH)[0] == 503
        status, body = _get(capped.http_port, "/v2/health/ready")
        assert (status, json.loads(body)) == (200, {"ready": True})
        assert _get(capped.http_port, "/v2/models/sr2/ready")[0] == 200
        with _connect(capped.http_port) as extra:  # one answer, then the server closes the connection
            assert _keep_alive_get(extra, "/v2/health/live").startswith(b"HTTP/1.1 200")
            assert _closed_after(extra) < 2
        for sock in held:  # the held ones still work
            assert _keep_alive_get(sock, "/v2/models/sr2", auth).startswith(b"HTTP/1.1 200")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while _get(capped.http_port, "/v2/models/sr2", AUTH)[0] != 200:
        assert time.monotonic() < deadline, "the cap was not released when the connections closed"
        time.sleep(0.1)


def _stream_requests(release: threading.Event):
    x = pb.ModelInferRequest.InferInputTensor(name="lr", datatype="FP32", shape=[1, 3, 4, 4])
    request = pb.ModelInferRequest(model_name="sr2", inputs=[x],
                                   raw_input_contents=[np.full((1, 3, 4, 4), 0.5, np.float32).tobytes()])
    yield request
    release.wait(30)


def test_past_the_rpc_cap_calls_are_refused_but_health_answers(capped) -> None:
    client = tg.InferenceServerClient(f"127.0.0.1:{capped.port}")
    release = threading.Event()
    with grpc.insecure_channel(f"127.0.0.1:{capped.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        streams = [stub.ModelStreamInfer(_stream_requests(release), metadata=tuple(BEARER.items()), timeout=30)
                   for _ in range(2)]
        try:
            for stream in streams:  # each call runs in the server (its first answer is back) and stays open
                assert not next(stream).error_message
            with pytest.raises(Exception) as info:
                _infer_grpc(client, headers=BEARER)
            assert "RESOURCE_EXHAUSTED" in str(info.value) and "--max-rpcs" in str(info.value)
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="sr2"), timeout=5)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("sr2")
        finally:
            release.set()
            for stream in streams:
                list(stream)
    deadline = time.monotonic() + 5
    while True:
        try:
            assert np.array_equal(_infer_grpc(client, headers=BEARER), EXPECTED)
            break
        except Exception:  # noqa: BLE001  (the slots free as the streams end)
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_limit_flags_reach_the_server(repo) -> None:
    """`ganserve serve --header-timeout 1 --max-connections 1`: the command line's limits are the ones enforced."""
    child = start_subprocess(repo, ["--header-timeout", "1", "--max-connections", "1", "--intra-op-threads", "1"])
    try:
        with _connect(child.http_port) as held:
            assert _keep_alive_get(held, "/v2/health/live").startswith(b"HTTP/1.1 200")
            assert _get(child.http_port, "/v2/models/sr2")[0] == 503  # past --max-connections 1
            with _connect(child.http_port) as sock:
                sock.sendall(b"GET /v2/health/live HTTP/1.1\r\n")
                assert _closed_after(sock) < 2.8  # --header-timeout 1
    finally:
        child.proc.terminate()
        child.proc.wait(30)
