"""Fuzz the Open Inference Protocol request validation without a transport (serving/tensors.py decode_inputs and
requested_outputs, which ModelInfer and REST infer both call, and serving/rest.py infer_request for REST bodies).

Random model configs (every served datatype, with and without a batch dimension, fixed and dynamic dims) meet
random ModelInferRequests: shapes negative, zero, huge (products past int64), datatypes valid and not, raw
contents of wrong lengths, typed contents of wrong counts or out of their datatype's range, duplicate, unknown and
missing tensor names, unknown outputs. An independent oracle says whether each request is valid; decode_inputs must
agree: accept a valid one with arrays of the declared shape, dtype and values, and refuse an invalid one with
ServingError(INVALID_ARGUMENT) and a message, never another exception.
"""

from __future__ import annotations

import json
import math

import grpc
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import model_config_pb2 as mc
from ganserve.serving.rest import infer_request
from ganserve.serving.status import ServingError
from ganserve.serving.tensors import CONTENTS_FIELD, NUMPY, decode_inputs, requested_outputs

FUZZ = settings.get_profile("fuzz")
DATATYPES = list(NUMPY)
NAMES = ["x", "y", "z"]  # few, so requests often repeat a name or name one the model lacks
BAD_DATATYPES = ["", "fp32", "FP32 ", "STRING", "BYTES", "BF16", "FLOAT", "TYPE_FP32", "INT128", "\x00", "é"]
HUGE = [2**31, 2**32, 2**61, 2**62, 2**63 - 1]
# Each integer datatype's own range, and the range of the protobuf field that carries it when typed (INT8 and
# INT16 travel in int_contents, 32-bit; UINT8 and UINT16 in uint_contents): values between the two are invalid.
RANGES = {dt: (int(np.iinfo(NUMPY[dt]).min), int(np.iinfo(NUMPY[dt]).max)) for dt in DATATYPES
          if NUMPY[dt].kind in "iu"}
FIELD_RANGE = {"int_contents": (-(2**31), 2**31 - 1), "uint_contents": (0, 2**32 - 1),
               "int64_contents": (-(2**63), 2**63 - 1), "uint64_contents": (0, 2**64 - 1)}


def rarely(draw, one_in: int) -> bool:
    """True about once in ``one_in`` draws (hypothesis favours small integers, so test the top value, not 0)."""
    return draw(st.integers(1, one_in)) == one_in


def config_of(inputs: list[tuple[str, str, list[int], bool]], max_batch: int, outputs: list[str]) -> mc.ModelConfig:
    config = mc.ModelConfig(name="m", max_batch_size=max_batch)
    for name, datatype, dims, optional in inputs:
        config.input.add(name=name, data_type=mc.DataType.Value(f"TYPE_{datatype}"), dims=dims, optional=optional)
    for name in outputs:
        config.output.add(name=name, data_type=mc.TYPE_FP32, dims=[-1])
    return config


@st.composite
def configs(draw) -> mc.ModelConfig:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    inputs = [(n, draw(st.sampled_from(DATATYPES)), draw(st.lists(st.sampled_from([-1, 1, 2, 3]), max_size=3)),
               draw(st.booleans()) and draw(st.booleans())) for n in names]
    return config_of(inputs, draw(st.sampled_from([0, 0, 1, 4])), ["out", "aux"])


def _values(draw, datatype: str, count: int, in_range: bool) -> list:
    field = CONTENTS_FIELD[datatype]
    if datatype == "BOOL":
        return draw(st.lists(st.booleans(), min_size=count, max_size=count))
    if field in ("fp32_contents", "fp64_contents"):
        width = 32 if field == "fp32_contents" else 64
        return draw(st.lists(st.floats(width=width, allow_nan=True, allow_infinity=True), min_size=count,
                             max_size=count))
    lo, hi = RANGES[datatype] if in_range else FIELD_RANGE[field]
    return draw(st.lists(st.integers(lo, hi), min_size=count, max_size=count))


@st.composite
def requests(draw, config: mc.ModelConfig) -> pb.ModelInferRequest:
    """Mostly valid requests for `config`, each with a few things possibly wrong (about half end up invalid)."""
    request = pb.ModelInferRequest(model_name="m", id=draw(st.text(max_size=4)))
    specs = list(config.input)
    if rarely(draw, 4):  # some inputs left out, repeated or reordered
        specs = draw(st.lists(st.sampled_from(specs), max_size=len(specs) + 1))
    if rarely(draw, 10):  # an input the model does not have
        specs = specs + [mc.ModelInput(name=draw(st.sampled_from(NAMES + ["", "X", "x\x00"])),
                                       data_type=mc.TYPE_FP32)]
    raw_mode = draw(st.booleans())
    raws = []
    for spec in specs:
        want = mc.DataType.Name(spec.data_type).removeprefix("TYPE_")
        datatype = draw(st.sampled_from(DATATYPES + BAD_DATATYPES)) if rarely(draw, 30) else want
        batch = [draw(st.integers(1, config.max_batch_size))] if config.max_batch_size > 0 else []
        shape = batch + [draw(st.integers(0, 3)) if d == -1 else d for d in spec.dims]
        roll = draw(st.integers(1, 16))
        if roll == 16 and shape:  # one dimension wrong: negative, zero, huge, off by one
            i = draw(st.integers(0, len(shape) - 1))
            shape[i] = draw(st.sampled_from([-1, -(2**63), 0, shape[i] + 1] + HUGE))
        elif roll == 15:  # wrong rank
            shape = shape + [1] if draw(st.booleans()) or not shape else shape[:-1]
        elif roll == 14 and shape:  # every dimension huge: the element count overflows int64
            shape = [draw(st.sampled_from(HUGE)) for _ in shape]
        tensor = request.inputs.add(name=spec.name, datatype=datatype, shape=shape)
        count = math.prod(shape)
        dtype = NUMPY.get(datatype, NUMPY[want])
        fits = 0 <= count <= 64
        if raw_mode:  # the right byte count where there is one, else a few bytes; sometimes off by a bit
            size = count * dtype.itemsize if fits else draw(st.sampled_from([0, 1, 4, 8]))
            if rarely(draw, 6):
                size = max(0, size + draw(st.sampled_from([-1, 1, -dtype.itemsize, dtype.itemsize])))
            raws.append(draw(st.binary(min_size=size, max_size=size)))
        elif CONTENTS_FIELD.get(datatype):
            n = count if fits else draw(st.integers(0, 3))
            if rarely(draw, 6):
                n = max(0, n + draw(st.sampled_from([-1, 1])))
            values = _values(draw, datatype, n, in_range=not rarely(draw, 5))
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    if raw_mode:
        if raws and rarely(draw, 10):  # one raw content too many or too few
            raws = raws[:-1] if draw(st.booleans()) else raws + [b""]
        request.raw_input_contents.extend(raws)
    for name in draw(st.lists(st.sampled_from(["out", "aux", "out", "aux", "nope"]), max_size=2)):
        out = request.outputs.add(name=name)
        if draw(st.booleans()):
            out.parameters["binary_data"].bool_param = draw(st.booleans())
    return request


def oracle(request: pb.ModelInferRequest, config: mc.ModelConfig) -> str:
    """Why the request is invalid, or "" when it is valid: the protocol's rules, written independently."""
    specs = {i.name: i for i in config.input}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        return "raw count"
    seen = set()
    for index, tensor in enumerate(request.inputs):
        spec = specs.get(tensor.name)
        if spec is None or tensor.name in seen:
            return "name"
        seen.add(tensor.name)
        want = mc.DataType.Name(spec.data_type).removeprefix("TYPE_")
        if tensor.datatype != want:
            return "datatype"
        shape = list(tensor.shape)
        expected = ([-1] if config.max_batch_size > 0 else []) + list(spec.dims)
        if len(shape) != len(expected) or any(e not in (-1, s) for s, e in zip(shape, expected)):
            return "shape"
        if any(s < 0 for s in shape) or (config.max_batch_size > 0 and not 1 <= shape[0] <= config.max_batch_size):
            return "shape"
        count = math.prod(shape)
        if raw:
            if len(raw[index]) != count * NUMPY[want].itemsize:
                return "raw size"
        else:
            field = CONTENTS_FIELD.get(want)
            if field is None:
                return "not typed"
            values = list(getattr(tensor.contents, field))
            if len(values) != count:
                return "value count"
            if want in RANGES and not all(RANGES[want][0] <= v <= RANGES[want][1] for v in values):
                return "value range"
    if [n for n, s in specs.items() if n not in seen and not s.optional]:
        return "missing"
    if any(o.name not in {o.name for o in config.output} for o in request.outputs):
        return "output"
    return ""


def check(request: pb.ModelInferRequest, config: mc.ModelConfig) -> None:
    why = oracle(request, config)
    try:
        arrays = decode_inputs(request, config)
        wanted = requested_outputs(request, config)
    except ServingError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, (err.code, err.message)
        assert err.message.strip()
        assert why, f"a valid request was refused: {err.message}"
        return
    assert not why, f"an invalid request ({why}) was accepted: {request}"
    assert list(arrays) == [t.name for t in request.inputs]
    raw = list(request.raw_input_contents)
    for index, tensor in enumerate(request.inputs):
        array, dtype = arrays[tensor.name], NUMPY[tensor.datatype]
        assert array.shape == tuple(tensor.shape)
        assert array.dtype == dtype.newbyteorder("=")
        sent = (np.frombuffer(raw[index], dtype) if raw
                else np.asarray(list(getattr(tensor.contents, CONTENTS_FIELD[tensor.datatype])), dtype))
        assert array.astype(dtype).tobytes() == sent.tobytes()  # bytes: NaNs compare too
    names = [o.name for o in request.outputs] or [o.name for o in config.output]
    assert [n for n, _ in wanted] == names


SR = config_of([("lr", "FP32", [3, -1, -1], False)], 8, ["hr"])
TYPED = config_of([("x", "UINT8", [-1], True), ("y", "INT16", [-1], True)], 0, ["out"])


def _req(*tensors: tuple[str, str, list[int]], raw: list[bytes] | None = None) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.extend(raw or [])
    return request


def _typed(name: str, datatype: str, values: list) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(values)
    return request


@settings(FUZZ, max_examples=300, deadline=None, derandomize=True)
@given(data=st.data(), config=configs())
def test_model_infer_request_validation(data, config: mc.ModelConfig) -> None:
    check(data.draw(requests(config), label="request"), config)


# Found by the fuzz above: element counts past int64 wrapped in np.prod (to 0 here), so an empty raw content
# "matched" the shape and the reshape raised ValueError (INTERNAL to the client); typed values out of a narrow
# datatype's range were wrapped silently (UINT8 300 arrived as 44).
@pytest.mark.parametrize("config, request_", [
    (SR, _req(("lr", "FP32", [1, 3, 2**62, 2**62]), raw=[b""])),
    (SR, _req(("lr", "FP32", [1, 3, 2**32, 2**32]), raw=[b""])),
    (SR, _req(("lr", "FP32", [1, 2**63 - 1, 2**63 - 1, 2**63 - 1]), raw=[b"\0" * 12])),
    (TYPED, _typed("x", "UINT8", [1, 300])),
    (TYPED, _typed("x", "UINT8", [1, 2**32 - 1])),
    (TYPED, _typed("y", "INT16", [-(2**15) - 1])),
], ids=["2^62x2^62", "2^32x2^32", "int64-max-cubed", "uint8-300", "uint8-2^32-1", "int16-below-min"])
def test_found_cases_are_invalid_argument(config: mc.ModelConfig, request_: pb.ModelInferRequest) -> None:
    assert oracle(request_, config)
    check(request_, config)


# -- REST: a v2 JSON body becomes the same ModelInferRequest, then the same validation ---------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         st.text(max_size=3))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@st.composite
def rest_bodies(draw) -> tuple[bytes, str | None]:
    """v2 JSON bodies for sr2 (input lr, FP32 [-1, 3, -1, -1]), mostly well formed, sometimes not at all."""
    dims = [draw(st.integers(1, 2)), 3, draw(st.integers(0, 3)), draw(st.integers(0, 3))]
    if rarely(draw, 4):
        dims = draw(st.lists(st.one_of(st.integers(-1, 3), st.sampled_from([2**63, -(2**64)] + HUGE)), max_size=5))
    shape = draw(json_values) if rarely(draw, 10) else dims
    item: dict = {"name": draw(st.sampled_from(["x", 3, None])) if rarely(draw, 10) else "lr",
                  "datatype": (draw(st.sampled_from(DATATYPES + BAD_DATATYPES + [None, 7])) if rarely(draw, 6)
                               else "FP32"),
                  "shape": shape}
    binary = b""
    if draw(st.booleans()):
        count = math.prod(dims) if all(isinstance(d, int) and 0 <= d <= 4 for d in dims) else 1
        item["data"] = draw(json_values) if rarely(draw, 4) else draw(
            st.lists(st.floats(-1, 1, width=32), min_size=count, max_size=count))
    else:
        count = math.prod(dims) if all(isinstance(d, int) and 0 <= d <= 4 for d in dims) else 1
        binary = draw(st.binary(min_size=4 * count, max_size=4 * count)) if not rarely(draw, 4) else \
            draw(st.binary(max_size=64))
        item["parameters"] = {"binary_data_size": draw(json_scalars) if rarely(draw, 4) else len(binary)}
    body: dict = {"inputs": draw(json_values) if rarely(draw, 10) else [item]}
    if draw(st.booleans()):
        body["outputs"] = draw(json_values) if rarely(draw, 5) else [{"name": "hr"}]
    header = json.dumps(body).encode()
    if rarely(draw, 20):
        header = header[: draw(st.integers(0, len(header)))]
    length = str(len(header)) if binary or draw(st.booleans()) else None
    if rarely(draw, 20):
        length = draw(st.sampled_from(["-1", "", "abc", str(len(header) + 10**6), "1e3"]))
    return header + binary, length


@settings(FUZZ, max_examples=150, deadline=None, derandomize=True)
@given(body=rest_bodies())
def test_rest_infer_body_validation(body: tuple[bytes, str | None]) -> None:
    payload, header_length = body
    try:
        request, _ = infer_request("sr2", "", payload, header_length)
    except ServingError as err:
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, (err.code, err.message)
        assert err.message.strip()
        return
    check(request, SR)
