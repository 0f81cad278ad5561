"""Fuzz a real server in-process: a few thousand malformed requests over gRPC and HTTP, seeded and bounded.

Kinds sent (counts in PLAN): random bytes as ModelInfer / Images bodies through a raw channel; mutated valid
ModelInferRequests (huge declared shapes, wrong datatypes, truncated or padded raw contents, typed contents of wrong
counts, duplicate/unknown/missing names, unknown models and versions, bit flips on the wire); Images Transform and
Classify with random, truncated, corrupt and lying images and random options; POST /v1/models/{m}/transform and
/classify over HTTP with the same bodies, random query parameters and broken multipart forms; and a concurrent
burst of valid ModelInfers of mixed shapes (they share batches) whose outputs are checked.

Checks: no answer is UNKNOWN or INTERNAL (HTTP: no 5xx but 503/504), every error has a message, and valid requests
sent after the fuzz answer byte for byte as before it (timings aside). The counts go to the log.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from fuzz_inputs import JPEG_MODES, PNG_MODES, flip_bits, make_image, png_with_size
from ganserve.serving.proto.ganserve.v1 import images_pb2 as ipb
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.server import ServerThread

SEED = 20240611
PLAN = {"grpc random body": 500, "grpc mutated ModelInfer": 1000, "grpc Images": 600, "http images": 450,
        "grpc concurrent valid ModelInfer": 160}
INFER = "/inference.GRPCInferenceService/ModelInfer"
IMAGES = "/ganserve.v1.Images/"
BAD_GRPC = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
MODELS = ["sr2", "digits", "aging", "broken", "nope", "", "SR2", "sr2/../digits", "é" * 3]
VERSIONS = ["", "", "", "1", "2", "0", "-1", "abc", "99999999999999999999", " 1"]
DATATYPES = ["FP32", "FP16", "FP64", "INT8", "UINT8", "INT64", "BOOL", "BYTES", "STRING", "", "fp32", "BF16"]
HUGE = [2**31, 2**32, 2**62, 2**63 - 1]
MAX_MESSAGE_MB = 2


@dataclass
class Tally:
    """Statuses seen per kind of request, and the answers that broke a rule (with the request that caused them)."""

    seen: dict[str, collections.Counter] = field(default_factory=lambda: collections.defaultdict(collections.Counter))
    bad: list[str] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)  # the concurrent burst tallies from threads

    def grpc(self, kind: str, call, body: bytes, what: str) -> bytes | None:
        try:
            answer = call(body, timeout=30)
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            with self.lock:
                self.seen[kind][code.name] += 1
                self.samples[code.name].append(f"{what[:150]} -> {details[:200]}")
                if code in BAD_GRPC or not details.strip():
                    self.bad.append(f"{kind}: {what} -> {code.name} {details!r}")
            return None
        with self.lock:
            self.seen[kind]["OK"] += 1
        return answer

    def http(self, kind: str, status: int, body: bytes, what: str) -> None:
        self.seen[kind][str(status)] += 1
        self.samples[str(status)].append(f"{what[:150]} -> {body[:200]!r}")
        if status >= 500 and status not in (503, 504):  # UNAVAILABLE and DEADLINE_EXCEEDED are answers too
            self.bad.append(f"{kind}: {what} -> HTTP {status} {body[:300]!r}")
        elif status >= 400:
            try:
                message = json.loads(body).get("error", "")
            except ValueError:
                message = ""
            if not isinstance(message, str) or not message.strip():
                self.bad.append(f"{kind}: {what} -> HTTP {status} without an error message: {body[:300]!r}")


@pytest.fixture(scope="module")
def server(fuzz_repo):
    from local_server import server_config

    config = server_config(fuzz_repo, max_message_mb=MAX_MESSAGE_MB)
    config.images.max_pixels = 256 * 256  # small, so lying and large headers meet the limit
    thread = ServerThread(config)
    thread.start()
    yield thread
    thread.stop()


# -- valid requests (sent before and after the fuzz) -----------------------------------------------------------
def sr2_infer(shape=(1, 3, 4, 4), seed: int = 0) -> pb.ModelInferRequest:
    x = np.random.default_rng(seed).uniform(-1, 1, shape).astype("<f4")
    request = pb.ModelInferRequest(model_name="sr2", id=f"sr2-{seed}")
    request.inputs.add(name="lr", datatype="FP32", shape=list(shape))
    request.raw_input_contents.append(x.tobytes())
    return request


def digits_infer(seed: int = 0) -> pb.ModelInferRequest:
    x = np.random.default_rng(seed).uniform(0, 1, (2, 1, 4, 4)).astype("<f4")
    request = pb.ModelInferRequest(model_name="digits", id="d")
    request.inputs.add(name="pixels", datatype="FP32", shape=[2, 1, 4, 4]).contents.fp32_contents.extend(x.ravel())
    request.outputs.add(name="probs").parameters["binary_data"].bool_param = False
    return request


def aging_infer(seed: int = 0) -> pb.ModelInferRequest:
    rng = np.random.default_rng(seed)
    request = pb.ModelInferRequest(model_name="aging")
    request.inputs.add(name="image", datatype="FP32", shape=[1, 3, 4, 6])
    request.inputs.add(name="age", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.extend([rng.uniform(-1, 1, (1, 3, 4, 6)).astype("<f4").tobytes(),
                                       np.eye(3, dtype="<f4")[1:2].tobytes()])
    return request


VALID_PNG = make_image("RGB", 12, 8, "PNG", 5)
GREY_PNG = make_image("L", 4, 4, "PNG", 6)


def valid_answers(channel: grpc.Channel, port: int) -> dict[str, bytes]:
    """The wire answers of one valid request per path; image replies without their timing (it varies)."""
    infer = channel.unary_unary(INFER)
    answers = {name: infer(request.SerializeToString(), timeout=30)
               for name, request in [("sr2", sr2_infer()), ("digits", digits_infer()), ("aging", aging_infer())]}
    transform = ipb.TransformRequest(model="sr2", image=VALID_PNG)
    reply = ipb.ImageResponse.FromString(channel.unary_unary(IMAGES + "Transform")(transform.SerializeToString(),
                                                                                    timeout=30))
    reply.ClearField("timing")
    answers["Transform sr2"] = reply.SerializeToString()
    aged = ipb.TransformRequest(model="aging", image=VALID_PNG, conditions={"age": "old"})
    reply = ipb.ImageResponse.FromString(channel.unary_unary(IMAGES + "Transform")(aged.SerializeToString(),
                                                                                    timeout=30))
    reply.ClearField("timing")
    answers["Transform aging"] = reply.SerializeToString()
    classify = ipb.ClassifyRequest(model="digits", image=GREY_PNG, top_k=3)
    reply = ipb.ClassifyResponse.FromString(channel.unary_unary(IMAGES + "Classify")(classify.SerializeToString(),
                                                                                      timeout=30))
    reply.ClearField("timing")
    answers["Classify digits"] = reply.SerializeToString()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/models/sr2/transform?format=png", body=VALID_PNG, headers={"Content-Type": "image/png"})
    response = conn.getresponse()
    head = f"{response.status} {response.getheader('Content-Type')} ".encode()
    answers["HTTP transform sr2"] = head + response.read()
    conn.close()
    return answers


# -- malformed requests ------------------------------------------------------------------------------------------
def random_body(rng: random.Random) -> bytes:
    n = rng.choice([0, 1, 2, 3, 5, 8, 16, 64, 256, 1024])
    body = rng.randbytes(n)
    if rng.random() < 0.3:  # a valid-looking start: field 1 (model_name) "sr2", then garbage
        body = b"\x0a\x03sr2" + body
    return body


def mutated_infer(rng: random.Random, nprng: np.random.Generator) -> tuple[bytes, str]:
    """A valid ModelInferRequest with 1-3 things broken; returns (wire bytes, what was done)."""
    base = rng.choice(["sr2", "sr2", "digits", "aging"])
    request = {"sr2": lambda: sr2_infer((rng.randint(1, 3), 3, rng.randint(1, 6), rng.randint(1, 6)),
                                        rng.randrange(1000)),
               "digits": lambda: digits_infer(rng.randrange(1000)),
               "aging": lambda: aging_infer(rng.randrange(1000))}[base]()
    done = [base]
    for _ in range(rng.randint(1, 3)):
        index = rng.randrange(len(request.inputs)) if request.inputs else -1
        tensor = request.inputs[index] if request.inputs else None
        what = rng.choice(["model", "version", "datatype", "shape huge", "shape dim", "rank", "raw cut", "raw pad",
                           "raw drop", "raw extra", "typed", "dup input", "unknown input", "drop input",
                           "unknown output", "parameters", "zero dim", "batch", "count wraps"])
        done.append(what)
        if what == "model":
            request.model_name = rng.choice(MODELS)
        elif what == "version":
            request.model_version = rng.choice(VERSIONS)
        elif what == "datatype" and tensor is not None:
            tensor.datatype = rng.choice(DATATYPES)
        elif what == "shape huge" and tensor is not None and tensor.shape:
            for i in range(len(tensor.shape)):
                if rng.random() < 0.6:
                    tensor.shape[i] = rng.choice(HUGE)
        elif what == "shape dim" and tensor is not None and tensor.shape:
            tensor.shape[rng.randrange(len(tensor.shape))] = rng.choice([-1, -(2**63), 0, 1, 7, 9, 2**20] + HUGE)
        elif what == "rank" and tensor is not None:
            if rng.random() < 0.5 and tensor.shape:
                del tensor.shape[-1]
            else:
                tensor.shape.append(rng.choice([1, 2]))
        elif what == "zero dim" and tensor is not None and tensor.shape:  # valid by the protocol: an empty tensor
            tensor.shape[rng.randrange(1, len(tensor.shape)) if len(tensor.shape) > 1 else 0] = 0
            if index < len(request.raw_input_contents):
                request.raw_input_contents[index] = b""
        elif what == "count wraps" and tensor is not None and len(tensor.shape) >= 3:  # 2^64 elements: 0 in int64
            tensor.shape[-2], tensor.shape[-1] = 2**32, 2**32
            if index < len(request.raw_input_contents):
                request.raw_input_contents[index] = b""
        elif what == "batch" and tensor is not None and tensor.shape:
            tensor.shape[0] = rng.choice([0, 8, 9, 100])
        elif what in ("raw cut", "raw pad") and request.raw_input_contents:
            i = rng.randrange(len(request.raw_input_contents))
            data = request.raw_input_contents[i]
            request.raw_input_contents[i] = (data[: rng.randrange(len(data) + 1)] if what == "raw cut"
                                             else data + rng.randbytes(rng.choice([1, 3, 4, 48])))
        elif what == "raw drop" and request.raw_input_contents:
            del request.raw_input_contents[-1]
        elif what == "raw extra":
            request.raw_input_contents.append(rng.randbytes(rng.choice([0, 4, 16])))
        elif what == "typed" and tensor is not None:  # typed contents instead of raw, of some length
            del request.raw_input_contents[:]
            tensor.contents.fp32_contents.extend(nprng.uniform(-1, 1, rng.choice([0, 1, 47, 48, 49])).tolist())
        elif what == "dup input" and tensor is not None:
            request.inputs.add().CopyFrom(tensor)
            if request.raw_input_contents:
                request.raw_input_contents.append(request.raw_input_contents[0])
        elif what == "unknown input":
            request.inputs.add(name=rng.choice(["x", "", "LR", "lr\x00"]), datatype="FP32", shape=[1, 3])
            if request.raw_input_contents:
                request.raw_input_contents.append(b"\0" * 12)
        elif what == "drop input" and request.inputs:
            del request.inputs[-1]
        elif what == "unknown output":
            request.outputs.add(name=rng.choice(["nope", "", "hr ", "probs"]))
        elif what == "parameters":
            param = request.parameters[rng.choice(["timeout", "priority", "binary_data_output", ""])]
            choice = rng.choice(["int64_param", "bool_param", "string_param"])
            setattr(param, choice, {"int64_param": rng.choice([-1, 0, 2**62]), "bool_param": True,
                                    "string_param": "x"}[choice])
    wire = request.SerializeToString()
    if rng.random() < 0.1:  # and now and then a few bit flips on the wire
        wire = flip_bits(wire, [rng.randrange(len(wire) * 8) for _ in range(rng.randint(1, 3))])
        done.append("bit flips")
    return wire, "+".join(done)


def fuzz_image(rng: random.Random) -> tuple[bytes, str]:
    """Image bytes: valid, truncated, bit-flipped, lying about the size, over the pixel limit, or random."""
    kind = rng.choice(["valid", "valid", "truncated", "flipped", "header", "large", "random", "empty"])
    if kind == "empty":
        return b"", kind
    if kind == "random":
        return rng.randbytes(rng.choice([1, 8, 100, 1000])), kind
    if kind == "large":  # 300x300 > the 256x256 limit
        return make_image("L", 300, 300, "PNG", rng.randrange(100)), kind
    fmt = "JPEG" if rng.random() < 0.35 else "PNG"
    mode = rng.choice(JPEG_MODES if fmt == "JPEG" else PNG_MODES)
    data = make_image(mode, rng.randint(1, 24), rng.randint(1, 24), fmt, rng.randrange(10_000))
    what = f"{kind} {fmt} {mode}"
    if kind == "truncated":
        return data[: rng.randrange(len(data))], what
    if kind == "flipped":
        return flip_bits(data, [rng.randrange(len(data) * 8) for _ in range(rng.randint(1, 6))]), what
    if kind == "header" and fmt == "PNG":
        return png_with_size(data, rng.choice([0, 1, 5, 100, 257, 70_000, 2**31 - 1]),
                             rng.choice([0, 1, 5, 100, 300, 2**31 - 1])), what
    return data, what


def image_request(rng: random.Random) -> tuple[str, bytes, str]:
    """(RPC, wire bytes, what) of a Transform or Classify request with random image and options."""
    image, what = fuzz_image(rng)
    classify = rng.random() < 0.3
    model = rng.choice(MODELS) if rng.random() < 0.15 else "digits" if classify else rng.choice(["sr2", "aging"])
    version = rng.choice(VERSIONS) if rng.random() < 0.15 else ""
    if classify:
        top_k = rng.choice([0, 1, 3, 5, -1, 2**31 - 1])
        request = ipb.ClassifyRequest(model=model, model_version=version, image=image, top_k=top_k)
        return "Classify", request.SerializeToString(), f"Classify {model}/{version!r} {what} top_k={request.top_k}"
    output_format = rng.choice([0, 1, 2, 2, 7])  # UNSPECIFIED, PNG, JPEG, and a value the enum lacks
    options = ipb.ImageOptions(output_format=output_format, jpeg_quality=rng.choice([0, 0, 1, 90, 100, 101, -5]))
    if rng.random() < 0.4:
        options.tile_size = rng.choice([-1, 0, 1, 3, 4, 8, 16, 2**31 - 1])
    if rng.random() < 0.4:
        options.tile_overlap = rng.choice([-1, 0, 1, 2, 4, 8, 2**31 - 1])
    request = ipb.TransformRequest(model=model, model_version=version, image=image, options=options)
    if rng.random() < 0.4:
        request.conditions[rng.choice(["age", "age", "AGE", "x", ""])] = rng.choice(["young", "old", "OLD ", "1", "3",
                                                                                    "-1", "", "ancient"])
    if rng.random() < 0.1:
        request.mask = fuzz_image(rng)[0]
    wire = request.SerializeToString()
    shown = str(options).replace("\n", " ")
    return "Transform", wire, f"Transform {model}/{version!r} {what} {shown}{dict(request.conditions)}"


def http_request(rng: random.Random) -> tuple[str, str, bytes, dict[str, str], str]:
    """(method, path, body, headers, what) of an image API request over HTTP."""
    image, what = fuzz_image(rng)
    endpoint = "classify" if rng.random() < 0.25 else "transform"
    model = (rng.choice(MODELS[:5] + ["%00", "a%2Fb", "%C3%A9"]) if rng.random() < 0.15
             else "digits" if endpoint == "classify" else rng.choice(["sr2", "aging"]))
    base = f"/v1/models/{model}" + (f"/versions/{rng.choice(['1', '2', 'x'])}" if rng.random() < 0.1 else "")
    params = []
    for name, values in [("format", ["png", "jpeg", "jpg", "gif", ""]), ("quality", ["1", "100", "101", "-1", "x"]),
                         ("tile_size", ["0", "4", "16", "-1", "1e3"]), ("tile_overlap", ["0", "2", "99", "-3"]),
                         ("top_k", ["0", "3", "-1", "z"]), ("timeout_ms", ["5000", "0", "-5", "x"]),
                         ("age", ["old", "young", "9"]), ("condition.age", ["adult", ""]), ("bogus", ["1"])]:
        if rng.random() < 0.15:
            params.append(f"{name}={rng.choice(values)}")
    if rng.random() < 0.05:
        params.append(params[0] if params else "format=png")  # a parameter twice
    path = base + f"/{endpoint}" + ("?" + "&".join(params) if params else "")
    headers = {"Content-Type": rng.choice(["image/png", "image/jpeg", "application/octet-stream"])}
    body = image
    roll = rng.random()
    if roll < 0.1:  # a multipart form, well formed or cut short
        boundary = uuid.UUID(int=rng.getrandbits(128)).hex
        fields = [("image", image, True), ("mask", image, True), ("format", b"png", False), ("extra", b"x", True)]
        parts = []
        for name, value, is_file in rng.sample(fields, rng.randint(0, len(fields))):
            filename = f'; filename="{name}.png"' if is_file else ""
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
                         + value + b"\r\n")
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        if rng.random() < 0.4:
            body = body[: rng.randrange(len(body) + 1)]
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        what += " multipart"
    elif roll < 0.13:
        headers["Content-Type"] = "multipart/form-data; boundary="
        what += " multipart without a boundary"
    return "POST", path, body, headers, f"{path} {what}"


def expected_sr2(request: pb.ModelInferRequest) -> np.ndarray:
    shape = list(request.inputs[0].shape)
    x = np.frombuffer(request.raw_input_contents[0], "<f4").reshape(shape)
    return x.repeat(2, axis=2).repeat(2, axis=3)


# aiohttp warns (from the server thread) about the broken Content-Disposition headers this test sends on purpose.
@pytest.mark.filterwarnings("ignore::aiohttp.multipart.BadContentDispositionHeader")
def test_server_survives_malformed_requests(server, capsys) -> None:
    rng, nprng = random.Random(SEED), np.random.default_rng(SEED)
    tally = Tally()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}", options=[
        ("grpc.max_send_message_length", 16 * 1024 * 1024), ("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    before = valid_answers(channel, server.http_port)
    infer = channel.unary_unary(INFER)
    images = {rpc: channel.unary_unary(IMAGES + rpc) for rpc in ("Transform", "Classify", "SuperResolve", "AgeFace",
                                                                 "Generate", "ListModels")}

    # 1. random bytes as request bodies (ModelInfer mostly, every unary Images RPC too); two over the size limit
    kind = "grpc random body"
    for i in range(PLAN[kind] - 2):
        body = random_body(rng)
        call, name = (infer, "ModelInfer") if i % 4 else (images[rng.choice(list(images))], "Images")
        tally.grpc(kind, call, body, f"{name} {body[:40]!r}")
    for call in (infer, images["Transform"]):
        tally.grpc(kind, call, b"\x0a\x03sr2" + b"\0" * (MAX_MESSAGE_MB * 1024 * 1024 + 10), "over the limit")

    # 2. mutated ModelInferRequests
    kind = "grpc mutated ModelInfer"
    for _ in range(PLAN[kind]):
        wire, what = mutated_infer(rng, nprng)
        tally.grpc(kind, infer, wire, what)

    # 3. the image API over gRPC
    kind = "grpc Images"
    for _ in range(PLAN[kind]):
        rpc, wire, what = image_request(rng)
        tally.grpc(kind, images[rpc], wire, what)

    # 4. the image API over HTTP (one keep-alive connection; a new one when the server closes it)
    kind = "http images"
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    for i in range(PLAN[kind]):
        method, path, body, headers, what = http_request(rng)
        if i == 0:  # one declared over the limit, refused before its body is read
            body, what = b"\0" * (MAX_MESSAGE_MB * 1024 * 1024 + 10), "over the limit"
        for attempt in range(2):
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                tally.http(kind, response.status, response.read(), what)
                if response.will_close:
                    conn.close()
                break
            except (http.client.HTTPException, ConnectionError) as exc:
                conn.close()
                if attempt:
                    tally.seen[kind]["connection error"] += 1
                    tally.bad.append(f"{kind}: {what} -> {type(exc).__name__}: {exc}")
    conn.close()

    # 5. valid requests of mixed shapes at once: they share batches; each answer must be its own upscaled input
    kind = "grpc concurrent valid ModelInfer"
    requests = [sr2_infer((rng.randint(1, 3), 3, rng.choice([2, 4]), rng.choice([2, 4])), 10_000 + i)
                for i in range(PLAN[kind])]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: tally.grpc(kind, infer, r.SerializeToString(), f"{list(r.inputs[0].shape)}"),
                                requests))
    for request, answer in zip(requests, answers):
        if answer is not None:
            reply = pb.ModelInferResponse.FromString(answer)
            got = np.frombuffer(reply.raw_output_contents[0], "<f4").reshape(list(reply.outputs[0].shape))
            if reply.id != request.id or not np.array_equal(got, expected_sr2(request)):
                tally.bad.append(f"{kind}: {request.id} {list(request.inputs[0].shape)} got a wrong answer")

    after = valid_answers(channel, server.http_port)
    channel.close()

    sent = {k: sum(c.values()) for k, c in tally.seen.items()}
    with capsys.disabled():
        print(f"\nserver fuzz (seed {SEED}): {sum(sent.values())} requests")
        for k, counter in tally.seen.items():
            print(f"  {k:34s} {sent[k]:5d}: " + ", ".join(f"{c} {n}" for c, n in counter.most_common()))
        if os.environ.get("FUZZ_SAMPLES"):  # FUZZ_SAMPLES=1: a few requests and answers of every status
            r = random.Random(1)
            for code, lines in tally.samples.items():
                for line in r.sample(lines, min(6, len(lines))):
                    print("   ", code, line)
        for line in tally.bad[:10]:
            print("  BAD", line[:400])
    assert sent == {k: v for k, v in PLAN.items()}, "every planned request was sent and answered"
    assert not tally.bad, f"{len(tally.bad)} answers broke the rules; first: {tally.bad[:5]}"
    assert after == before, [k for k in before if before[k] != after.get(k)]
