"""Fuzz KServe v2 REST infer against a real server on 127.0.0.1: malformed and odd bodies, seeded and bounded.

JSON bodies: wrong types, missing fields, huge and negative shapes, shape/data mismatches, NaN and infinities, deep
nesting, bad datatypes, lone surrogates and other unicode, truncated or non-UTF-8 JSON, bodies that are not objects.
Binary-extension bodies: Inference-Header-Content-Length negative, non-numeric, non-ASCII digits, past the body's
end, absent; binary_data_size of the wrong type, sign or sum. Every answer must be 200 or a 4xx with a JSON
{"error": "..."} body, never a 5xx; a valid request answers correctly afterwards. Then the JSON cap: a body one
byte over --max-json-mb is 413 with a message naming the limit, the flag and the binary extension (declared,
chunked, or as the binary extension's header), one exactly at the cap is parsed (in the JSON worker process), and
the worker stops with the server.
"""

from __future__ import annotations

import collections
import http.client
import json
import math
import socket
import time

import numpy as np
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganserve.serving.limits import Limits
from ganserve.serving.rest import INLINE_BYTES, KServeRest
from ganserve.serving.server import ServerThread

FUZZ = settings.get_profile("fuzz")
MAX_MESSAGE_MB = 2
JSON_CAP = 256 * 1024  # --max-json-mb 0.25: over INLINE_BYTES, so bodies near the cap go through the worker
DATATYPES = ["FP32", "FP16", "FP64", "INT8", "UINT8", "INT64", "BOOL", "BYTES", "STRING", "", "fp32", "BF16", "\ud800"]
HUGE = [2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, -(2**63), -1, 0]
MODELS = ["nope", "digits", "aging", "broken", "SR2", "%ED%A0%80", "%FF", "%00", "sr2/versions/9", "sr2/versions/1"]
BAD_LENGTHS = ["-1", "", "abc", "1e3", "+5", "0x10", "\xb2", "9" * 30, "9" * 5000, "1_0"]
SEEN: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=4))
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10)


def rarely(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws."""
    return draw(st.integers(1, one_in)) == one_in


@pytest.fixture(scope="module")
def server(fuzz_repo):
    from local_server import server_config

    thread = ServerThread(server_config(fuzz_repo, max_message_mb=MAX_MESSAGE_MB,
                                        limits=Limits(max_json_mb=JSON_CAP / 2**20)))
    thread.start()
    yield thread
    thread.stop()


class Client:
    """One keep-alive HTTP connection that reconnects when the server closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                reply = self.conn.getresponse()
                answer = reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
                if reply.will_close:
                    self.conn.close()
                return answer
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def client(server):
    client = Client(server.http_port)
    yield client
    client.conn.close()


def check_answer(kind: str, status: int, headers: dict[str, str], body: bytes, what: str) -> None:
    """200 with v2 outputs, or a 4xx with {"error": "..."}; never a 5xx."""
    SEEN[kind][status] += 1
    assert status < 500, f"{what} -> {status} {body[:300]!r}"
    if status >= 400:
        assert headers.get("content-type", "").startswith("application/json"), (what, status, headers)
        message = json.loads(body).get("error")
        assert isinstance(message, str) and message.strip(), (what, status, body[:300])
        return
    length = headers.get("inference-header-content-length")
    header = json.loads(body if length is None else body[:int(length)])
    assert status == 200 and isinstance(header["outputs"], list), (what, status, body[:300])


def sr2_values(shape: list[int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def assert_valid_requests_answer(client: Client) -> None:
    """A JSON request and a binary one for sr2 answer with the input upscaled x2."""
    x = sr2_values([1, 3, 2, 4], 7)
    expected = x.repeat(2, 2).repeat(2, 3)
    body = json.dumps({"inputs": [{"name": "lr", "datatype": "FP32", "shape": [1, 3, 2, 4],
                                   "data": x.ravel().tolist()}]}).encode()
    status, _, reply = client.post("/v2/models/sr2/infer", body, {"Content-Type": "application/json"})
    out = json.loads(reply)["outputs"][0]
    assert status == 200 and out["shape"] == [1, 3, 4, 8]
    assert np.array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), expected)
    header = json.dumps({"inputs": [{"name": "lr", "datatype": "FP32", "shape": [1, 3, 2, 4],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, reply = client.post("/v2/models/sr2/infer", header + x.tobytes(),
                                         {"Inference-Header-Content-Length": str(len(header))})
    length = int(headers["inference-header-content-length"])
    assert status == 200 and np.array_equal(np.frombuffer(reply[length:], "<f4").reshape(1, 3, 4, 8), expected)


# -- JSON bodies ---------------------------------------------------------------------------------------------------
JSON_BREAKS = ["name", "datatype", "shape", "huge shape", "data", "data count", "nan", "nested", "ragged", "deep",
               "inputs", "item", "drop field", "outputs", "parameters", "input parameters", "id", "model", "top",
               "truncate", "bytes", "utf-16", "int datatype", "two inputs"]


@st.composite
def json_requests(draw) -> tuple[str, bytes, str]:
    """(path, body, what): a v2 JSON infer request for sr2 broken in one to three ways."""
    shape = [draw(st.integers(1, 2)), 3, draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    data = sr2_values(shape, draw(st.integers(0, 99))).ravel().tolist()
    item: dict = {"name": "lr", "datatype": "FP32", "shape": shape, "data": data}
    request: object = {"inputs": [item]}
    path, deep = "/v2/models/sr2/infer", 0
    breaks = draw(st.lists(st.sampled_from(JSON_BREAKS), min_size=1, max_size=3))
    for what in breaks:
        if what == "name":
            item["name"] = draw(st.sampled_from([3, None, "", "x", "LR", "lr\x00", "é" * 3, "\ud800", ["lr"],
                                                 "l" * 5000]))
        elif what == "datatype":
            item["datatype"] = draw(st.sampled_from(DATATYPES + [None, 7, ["FP32"]]))
        elif what == "shape":
            item["shape"] = draw(st.sampled_from([[], [1], [-1, 3, 2, 2], [1.5, 3, 1, 1], ["1"], None, "1,3", [True, 3],
                                                  [1] * 100, [[1, 3]]]) | json_values)
        elif what == "huge shape":
            item["shape"] = [draw(st.sampled_from(HUGE)) if draw(st.booleans()) else d for d in shape]
        elif what == "data":
            item["data"] = draw(json_values)
        elif what == "data count":
            item["data"] = data[: draw(st.integers(0, len(data)))] + [0.5] * draw(st.integers(0, 3))
        elif what == "nan":
            item["data"] = [draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e-320])) if i % 3 == 0 else v
                            for i, v in enumerate(data)]
        elif what == "nested":
            item["data"] = np.asarray(data).reshape(shape).tolist()
        elif what == "ragged":
            item["data"] = [data[:1], data[1:]]
        elif what == "deep":
            deep = draw(st.sampled_from([32, 33, 64, 500, 5_000, 200_000]))
        elif what == "inputs" and isinstance(request, dict):
            request["inputs"] = draw(st.sampled_from([[], {}, None, "lr", [None], [[]], [item, item], [item] * 50]))
        elif what == "item":
            item = draw(json_values)
            request = {"inputs": [item]}
        elif what == "drop field" and isinstance(item, dict):
            item.pop(draw(st.sampled_from(["name", "datatype", "shape", "data"])), None)
        elif what == "outputs" and isinstance(request, dict):
            request["outputs"] = draw(st.sampled_from([[{"name": "hr"}], [{"name": "nope"}], [{}], [None], {}, "hr",
                                                       [{"name": "hr", "parameters": {"classification": 3}}],
                                                       [{"name": "hr", "parameters": {"binary_data": True}}],
                                                       [{"name": "hr", "parameters": []}], [{"name": "\ud800"}]])
                                        | json_values)
        elif what == "parameters" and isinstance(request, dict):
            key = draw(st.sampled_from(["timeout", "binary_data_output", "priority", ""]))
            request["parameters"] = (draw(json_values) if rarely(draw, 4) else
                                     {key: draw(st.sampled_from([-1, 0, 1, 1e-9, 2**70, True, "5", None, math.nan,
                                                                 math.inf]))})
        elif what == "input parameters" and isinstance(item, dict):
            item["parameters"] = draw(json_values | st.sampled_from([{"binary_data_size": 0}, {"binary_data_size": 4},
                                                                     {"binary_data_size": -1}]))
        elif what == "id" and isinstance(request, dict):
            request["id"] = draw(json_values | st.sampled_from(["\ud800", "x" * 10_000, "\x00"]))
        elif what == "model":
            path = f"/v2/models/{draw(st.sampled_from(MODELS))}/infer"
        elif what == "top":
            request = draw(json_values)
        elif what == "int datatype" and isinstance(item, dict):
            item["datatype"] = draw(st.sampled_from(["INT8", "UINT8", "INT64", "BOOL", "FP16"]))
            item["data"] = draw(st.sampled_from([[300] * len(data), [-1] * len(data), [2**64] * len(data),
                                                 [1e10] * len(data), data]))
        elif what == "two inputs" and isinstance(request, dict):
            request["inputs"] = [item, {"name": "age", "datatype": "FP32", "shape": [1, 3], "data": [0, 1, 0]}]
    body = json.dumps(request).encode()
    if deep:
        body = ('{"inputs":[{"name":"lr","datatype":"FP32","shape":[1,3,1,1],"data":' + "[" * deep + "0.5"
                + "]" * deep + "}]}").encode()
    if "truncate" in breaks:
        body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
    if "bytes" in breaks:
        body = draw(st.sampled_from([b"\xff\xfe\x00", b"\x80" + body, body + b"\xc3", b"", b"null", b"[]", b"1"]))
    if "utf-16" in breaks:
        body = body.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    return path, body, "+".join(breaks)


@settings(FUZZ, max_examples=450)
@given(case=json_requests())
def test_malformed_json_bodies_are_4xx(client, case: tuple[str, bytes, str]) -> None:
    path, body, what = case
    status, headers, reply = client.post(path, body, {"Content-Type": "application/json"})
    check_answer("json", status, headers, reply, f"{what} {path} {body[:200]!r}")


# -- binary-extension bodies ------------------------------------------------------------------------------------
BINARY_BREAKS = ["length", "size type", "size off", "extra bytes", "short body", "no length", "aging", "json too",
                 "datatype", "shape"]


@st.composite
def binary_requests(draw) -> tuple[str, bytes, dict[str, str], str]:
    """(path, body, headers, what): a v2 binary-extension request, broken in one to three ways."""
    breaks = draw(st.lists(st.sampled_from(BINARY_BREAKS), min_size=1, max_size=3))
    shape = [draw(st.integers(1, 2)), 3, draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    raw = sr2_values(shape, draw(st.integers(0, 99))).tobytes()
    path = "/v2/models/sr2/infer"
    inputs = [{"name": "lr", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(raw)}}]
    parts = [raw]
    if "aging" in breaks:
        path = "/v2/models/aging/infer"
        age = np.eye(3, dtype="<f4")[shape[0] % 3: shape[0] % 3 + 1].repeat(shape[0], 0)
        inputs = [{"name": "image", "datatype": "FP32", "shape": shape, "parameters": {"binary_data_size": len(raw)}},
                  {"name": "age", "datatype": "FP32", "shape": [shape[0], 3],
                   "parameters": {"binary_data_size": age.nbytes}}]
        parts = [raw, age.tobytes()]
    target = inputs[draw(st.integers(0, len(inputs) - 1))]
    if "size type" in breaks:
        target["parameters"]["binary_data_size"] = draw(st.sampled_from([-1, -(2**63), 2**64, 1.0, "12", True, None,
                                                                         [], {}]))
    if "size off" in breaks:
        target["parameters"]["binary_data_size"] += draw(st.sampled_from([-4, -1, 1, 4, 1 << 20]))
    if "json too" in breaks:  # data beside binary_data_size, or data instead of it
        target["data"] = [0.5] * (len(raw) // 4)
        if draw(st.booleans()):
            del target["parameters"]
    if "datatype" in breaks:
        target["datatype"] = draw(st.sampled_from(DATATYPES))
    if "shape" in breaks:
        target["shape"] = [draw(st.sampled_from(HUGE)) if draw(st.booleans()) else d for d in target["shape"]]
    header = json.dumps({"inputs": inputs, "parameters": {"binary_data_output": draw(st.booleans())}}).encode()
    binary = b"".join(parts)
    if "extra bytes" in breaks:
        binary += b"\0" * draw(st.sampled_from([1, 3, 4, 100]))
    if "short body" in breaks:
        binary = binary[: draw(st.integers(0, max(len(binary) - 1, 0)))]
    body = header + binary
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    if "length" in breaks:
        headers["Inference-Header-Content-Length"] = draw(st.sampled_from(
            BAD_LENGTHS + [str(len(header) - 1), str(len(header) + 1), str(len(body)), str(len(body) + 1), "0",
                           str(JSON_CAP + 1), f" {len(header)}", f"0{len(header)}"]))
    if "no length" in breaks:
        del headers["Inference-Header-Content-Length"]
    return path, body, headers, "+".join(breaks)


@settings(FUZZ, max_examples=250)
@given(case=binary_requests())
def test_malformed_binary_extension_bodies_are_4xx(client, case: tuple[str, bytes, dict[str, str], str]) -> None:
    path, body, headers, what = case
    status, reply_headers, reply = client.post(path, body, headers)
    check_answer("binary", status, reply_headers, reply, f"{what} {path} {headers} {body[:200]!r}")


def test_lone_surrogates_and_deep_nesting_are_400(client) -> None:
    """Found by the fuzz above: a name or id with a lone surrogate, and JSON nested past the parser's recursion
    limit, were 500s (UnicodeEncodeError from protobuf, RecursionError from json.loads)."""
    for body in [b'{"inputs":[{"name":"\\ud800","datatype":"FP32","shape":[1],"data":[1]}]}',
                 b'{"id":"\\udfff","inputs":[{"name":"lr","datatype":"FP32","shape":[1,3,1,1],"data":[1,2,3]}]}',
                 b'{"inputs":[{"name":"lr","datatype":"FP32","shape":[1],"data":' + b"[" * 100_000 + b"]" * 100_000
                 + b"}]}"]:
        status, headers, reply = client.post("/v2/models/sr2/infer", body, {"Content-Type": "application/json"})
        assert status == 400 and json.loads(reply)["error"], reply[:300]


def test_the_server_still_answers_after_the_fuzz(client, capsys) -> None:
    assert_valid_requests_answer(client)
    with capsys.disabled():
        for kind, counter in SEEN.items():
            print(f"\nREST fuzz {kind}: {sum(counter.values())} requests: "
                  + ", ".join(f"{n} x {code}" for code, n in sorted(counter.items())))


# -- the JSON cap ----------------------------------------------------------------------------------------------------
def padded_request(size: int, seed: int = 3) -> tuple[bytes, np.ndarray]:
    """A valid JSON sr2 request of exactly `size` bytes (its "id" pads it) and its input."""
    x = sr2_values([1, 3, 32, 32], seed)  # ~60 KiB of numbers; with the padding, a body near the cap
    request = {"id": "", "inputs": [{"name": "lr", "datatype": "FP32", "shape": [1, 3, 32, 32],
                                     "data": x.ravel().tolist()}]}
    bare = len(json.dumps(request).encode())
    assert bare <= size
    request["id"] = " " * (size - bare)
    body = json.dumps(request).encode()
    assert len(body) == size
    return body, x


def assert_cap_message(status: int, reply: bytes) -> None:
    message = json.loads(reply)["error"]
    assert status == 413, reply[:300]
    assert str(JSON_CAP) in message and "--max-json-mb" in message and "binary tensor data extension" in message


def test_json_at_the_cap_is_parsed_one_byte_over_is_413(client) -> None:
    body, x = padded_request(JSON_CAP)
    assert len(body) > INLINE_BYTES  # parsed, and its answer written, in the worker process
    status, _, reply = client.post("/v2/models/sr2/infer", body, {"Content-Type": "application/json"})
    assert status == 200, reply[:300]
    out = json.loads(reply)["outputs"][0]
    assert np.array_equal(np.asarray(out["data"], np.float32).reshape(out["shape"]), x.repeat(2, 2).repeat(2, 3))
    over, _ = padded_request(JSON_CAP + 1)
    status, _, reply = client.post("/v2/models/sr2/infer", over, {"Content-Type": "application/json"})
    assert_cap_message(status, reply)

    def chunks():  # no Content-Length: the cap applies once the body is in
        yield over[:1000]
        yield over[1000:]
    client.conn.close()
    client.conn.request("POST", "/v2/models/sr2/infer", body=chunks(), encode_chunked=True,
                        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    reply = client.conn.getresponse()
    assert_cap_message(reply.status, reply.read())
    client.conn.close()
    assert_valid_requests_answer(client)


def test_binary_extension_header_over_the_cap_is_413_before_the_body(server, client) -> None:
    """The declared JSON header length is checked before the body is read; the binary bytes after the header do not
    count against the JSON cap."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/sr2/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                     + f"Inference-Header-Content-Length: {JSON_CAP + 1}\r\nContent-Length: {JSON_CAP + 10}\r\n\r\n"
                     .encode())
        start = time.monotonic()
        head = sock.recv(65536)
        sock.shutdown(socket.SHUT_WR)  # the body never comes; the server stops waiting for it and closes
        while sock.recv(65536):
            pass
    assert head.startswith(b"HTTP/1.1 413") and time.monotonic() - start < 5
    assert_cap_message(413, head.split(b"\r\n\r\n", 1)[1])
    x = sr2_values([1, 3, 128, 256], 5)  # 384 KiB of binary after a small header: 1.5x the JSON cap
    header = json.dumps({"inputs": [{"name": "lr", "datatype": "FP32", "shape": [1, 3, 128, 256],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    assert len(header) + x.nbytes > JSON_CAP
    status, headers, reply = client.post("/v2/models/sr2/infer", header + x.tobytes(),
                                         {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, reply[:300]


def _json_worker_pid(thread: ServerThread) -> int | None:
    """The pid of the REST front's JSON worker process, or None before one started."""
    for route in thread.server._http.app.router.routes():
        rest = getattr(route.handler, "__self__", None)
        if isinstance(rest, KServeRest):
            pool = rest.json._pool
            return next(iter(pool._processes)) if pool is not None else None
    raise AssertionError("no KServeRest route")


def test_the_json_worker_starts_on_demand_and_stops_with_the_server(fuzz_repo) -> None:
    from local_server import server_config

    thread = ServerThread(server_config(fuzz_repo, limits=Limits(max_json_mb=JSON_CAP / 2**20)))
    thread.start()
    try:
        client = Client(thread.http_port)
        assert_valid_requests_answer(client)  # small: parsed on the loop, no worker
        assert _json_worker_pid(thread) is None
        body, _ = padded_request(INLINE_BYTES + 1000)
        status, _, reply = client.post("/v2/models/sr2/infer", body, {"Content-Type": "application/json"})
        assert status == 200, reply[:300]
        pid = _json_worker_pid(thread)
        assert pid is not None and psutil.pid_exists(pid)
        client.conn.close()
    finally:
        thread.stop()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
