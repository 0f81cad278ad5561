"""KServe v2 / Open Inference Protocol over HTTP/REST, with the binary tensor data extension.

Every answer comes from the same transport-free methods the gRPC servicer wraps (serving/oip.py), through the same
CallGate, so both protocols share the model manager, the batchers, the metrics and the error classes: a
ServingError's gRPC code maps onto its HTTP status (serving/status.py) and the body is ``{"error": "..."}``.

Binary extension: a request whose JSON header is followed by raw tensor bytes says the header's length in
``Inference-Header-Content-Length``; each binary input names its byte count in ``parameters.binary_data_size``, in
input order. Outputs come back binary when asked (``outputs[].parameters.binary_data`` or the request's
``parameters.binary_data_output``), with the same header on the reply.
"""

from __future__ import annotations

import base64
import json
import math
import time
from typing import Any

import numpy as np
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor

from ganserve.serving import status
from ganserve.serving.oip import InferenceServicer
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.tensors import NUMPY, datatype_of

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL = "/v2/models/{model}"
MODEL_VERSION = "/v2/models/{model}/versions/{version}"


# -- protobuf -> JSON with numbers as numbers ------------------------------------------------------------------
def proto_dict(message: Any, defaults: bool = False) -> dict[str, Any]:
    """A message as the JSON object KServe v2 REST answers with: proto field names, enums by name, and 64-bit
    integers as JSON numbers (protobuf's own JSON mapping writes them as strings). Set fields only, unless
    ``defaults``: then every field, zeros included (statistics, where a 0 count is an answer)."""
    if defaults:
        return {f.name: _field_value(f, getattr(message, f.name), True) for f in message.DESCRIPTOR.fields}
    return {f.name: _field_value(f, v) for f, v in message.ListFields()}


def _field_value(field: FieldDescriptor, value: Any, defaults: bool = False) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value_field = field.message_type.fields_by_name["value"]
        return {key: _scalar(value_field, item, defaults) for key, item in value.items()}
    if field.is_repeated:
        return [_scalar(field, item, defaults) for item in value]
    return _scalar(field, value, defaults)


def _scalar(field: FieldDescriptor, value: Any, defaults: bool = False) -> Any:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return proto_dict(value, defaults)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    if field.type == FieldDescriptor.TYPE_BYTES:
        return base64.b64encode(value).decode("ascii")
    return value


# -- request body -> ModelInferRequest ---------------------------------------------------------------------------
def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise status.invalid(f"{where} must be a JSON object")
    return value


def _parameters(value: dict[str, Any], where: str) -> dict[str, Any]:
    return _object(value.get("parameters", {}), f"{where}.parameters")


def _json_tensor(values: Any, datatype: str, name: str) -> bytes:
    """A JSON "data" array (flat or nested, row-major) as little-endian raw bytes of the datatype."""
    if datatype == "BYTES":
        raise status.invalid(f"input {name!r}: BYTES tensors are not served (no model here takes strings)")
    dtype = NUMPY.get(datatype)
    if dtype is None:
        raise status.invalid(f"input {name!r}: unknown datatype {datatype!r} (one of {', '.join(NUMPY)})")
    if not isinstance(values, list):
        raise status.invalid(f"input {name!r}: \"data\" must be a JSON array")
    try:
        array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise status.invalid(f"input {name!r}: \"data\" is not an array of {datatype} values ({exc})") from exc
    return array.ravel().tobytes()


def infer_request(model: str, version: str, body: bytes, header_length: str | None
                  ) -> tuple[pb.ModelInferRequest, dict[str, Any]]:
    """Parse a v2 REST infer body into a ModelInferRequest (every input raw) and the request's JSON header."""
    if header_length is None:
        header, binary = body, b""
    else:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise status.invalid(f"{HEADER_LENGTH} {header_length!r} must be a byte count within the body's "
                                 f"{len(body)} bytes")
        header, binary = body[:length], memoryview(body)[length:]
    try:
        request = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise status.invalid(f"the request's JSON header does not parse: {exc}") from exc
    request = _object(request, "the request")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise status.invalid('the request needs "inputs": a non-empty array of tensors')
    message = pb.ModelInferRequest(model_name=model, model_version=version, id=str(request.get("id", "")))
    offset = 0
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        item = _object(item, where)
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise status.invalid(f'{where} needs a "name" and a "datatype" string')
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise status.invalid(f'input {name!r}: "shape" must be an array of integers')
        size = _parameters(item, where).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise status.invalid(f"input {name!r}: binary_data_size {size!r} is more than the "
                                     f"{len(binary) - offset} binary bytes left in the body")
            raw = bytes(binary[offset:offset + size])
            offset += size
        elif "data" in item:
            raw = _json_tensor(item["data"], datatype, name)
        else:
            raise status.invalid(f'input {name!r} has neither "data" nor parameters.binary_data_size')
        tensor = message.inputs.add(name=name, datatype=datatype)
        try:
            tensor.shape.extend(shape)
        except ValueError as exc:  # a dimension outside int64
            raise status.invalid(f"input {name!r}: shape {shape}: {exc}") from exc
        message.raw_input_contents.append(raw)
    if offset != len(binary):
        raise status.invalid(f"{len(binary) - offset} binary bytes after the last binary input; the header's "
                             "binary_data_size values must add up to the binary part")
    for index, item in enumerate(_outputs_list(request)):
        out = _object(item, f"outputs[{index}]")
        params = _parameters(out, f"outputs[{index}]")
        if "classification" in params:
            raise status.invalid("the classification extension is not served; ask for the tensor, or call the image "
                                 "API's classify endpoint")
        wanted = message.outputs.add(name=str(out.get("name", "")))
        binary_data = params.get("binary_data", _binary_output(request))
        wanted.parameters["binary_data"].bool_param = bool(binary_data)
    return message, request


def _outputs_list(request: dict[str, Any]) -> list[Any]:
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise status.invalid('"outputs" must be an array')
    return outputs


def _binary_output(request: dict[str, Any]) -> bool:
    return bool(_parameters(request, "the request").get("binary_data_output", False))


def deadline_of(request: dict[str, Any]) -> float | None:
    """parameters.timeout (microseconds, as tritonclient sends it) as an absolute time.monotonic() deadline."""
    timeout = _parameters(request, "the request").get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise status.invalid(f"parameters.timeout must be a positive number of microseconds, got {timeout!r}")
    return time.monotonic() + timeout / 1e6


def infer_response(response: pb.ModelInferResponse, outputs: dict[str, np.ndarray],
                   wanted: list[tuple[str, bool]]) -> tuple[bytes, int | None]:
    """The reply body and, when any output is binary, the length of its JSON header."""
    header: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version,
                              "outputs": []}
    if response.id:
        header["id"] = response.id
    blobs: list[bytes | memoryview] = []
    for name, binary in wanted:
        array = outputs[name]
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = memoryview(np.ascontiguousarray(array, dtype=NUMPY[datatype]).reshape(-1).view(np.uint8))
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob)
        else:
            flat = array.ravel()
            if flat.dtype.kind == "f" and not np.isfinite(flat).all():
                entry["data"] = [v if math.isfinite(v) else None for v in flat.tolist()]
            else:
                entry["data"] = flat.tolist()
        header["outputs"].append(entry)
    head = json.dumps(header, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


# -- handlers ------------------------------------------------------------------------------------------------------
class KServeRest:
    """The v2 REST routes over one InferenceServicer; `front` reads bodies and answers errors (serving/http.py)."""

    def __init__(self, oip: InferenceServicer, front: Any) -> None:
        self.oip, self.front = oip, front

    def routes(self) -> list[web.RouteDef]:
        r = []
        r += [web.get("/v2", self.server_metadata), web.get("/v2/health/live", self.live),
              web.get("/v2/health/ready", self.ready)]
        for base in (MODEL, MODEL_VERSION):
            r += [web.get(base, self.model_metadata), web.get(base + "/ready", self.model_ready),
                  web.get(base + "/config", self.model_config), web.get(base + "/stats", self.statistics),
                  web.post(base + "/infer", self.infer)]
        r += [web.get("/v2/models/stats", self.statistics), web.post("/v2/repository/index", self.index),
              web.post("/v2/repository/models/{model}/load", self.load),
              web.post("/v2/repository/models/{model}/unload", self.unload)]
        return r

    @staticmethod
    def _names(request: web.Request) -> tuple[str, str]:
        return request.match_info.get("model", ""), request.match_info.get("version", "")

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"live": True})

    async def ready(self, request: web.Request) -> web.Response:
        ready = self.oip.server_ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def model_ready(self, request: web.Request) -> web.Response:
        ready = self.oip.model_ready(*self._names(request))
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response(proto_dict(self.oip.server_metadata()))

    async def _answer(self, method: str, model: str, work) -> web.Response:
        """Run `work` through the gate (metrics, shutdown) and answer its dict as JSON, or its error."""
        result, err = await self.oip.gate.outcome(method, model, work, protocol="http")
        if err is not None:
            return self.front.error(err)
        return web.json_response(result)

    async def model_metadata(self, request: web.Request) -> web.Response:
        model, version = self._names(request)

        async def work() -> dict[str, Any]:
            return proto_dict(self.oip.model_metadata(model, version))
        return await self._answer("ModelMetadata", model, work)

    async def model_config(self, request: web.Request) -> web.Response:
        model, version = self._names(request)

        async def work() -> dict[str, Any]:
            return proto_dict(self.oip.model_config(model, version).config)
        return await self._answer("ModelConfig", model, work)

    async def statistics(self, request: web.Request) -> web.Response:
        model, version = self._names(request)

        async def work() -> dict[str, Any]:
            return proto_dict(self.oip.statistics(model, version), defaults=True)
        return await self._answer("ModelStatistics", model, work)

    async def index(self, request: web.Request) -> web.Response:
        body = await self.front.body(request)
        try:
            options = _object(json.loads(body) if body.strip() else {}, "the request")
        except ValueError:
            return self.front.error(status.invalid("the request body must be JSON, e.g. {\"ready\": true}"))
        except status.ServingError as err:
            return self.front.error(err)
        index = self.oip.repository_index(bool(options.get("ready", False)))
        return web.json_response([proto_dict(m) for m in index.models])

    async def load(self, request: web.Request) -> web.Response:
        model, _ = self._names(request)
        await self.front.body(request)  # KServe allows a parameters object; none is used

        async def work() -> dict[str, Any]:
            await self.oip.load_model(model)
            return {}
        return await self._answer("RepositoryModelLoad", model, work)

    async def unload(self, request: web.Request) -> web.Response:
        model, _ = self._names(request)
        await self.front.body(request)

        async def work() -> dict[str, Any]:
            await self.oip.unload_model(model)
            return {}
        return await self._answer("RepositoryModelUnload", model, work)

    async def infer(self, request: web.Request) -> web.Response:
        model, version = self._names(request)

        async def work() -> tuple[bytes, int | None]:
            message, parsed = infer_request(model, version, await self.front.body(request),
                                            request.headers.get(HEADER_LENGTH))
            deadline = deadline_of(parsed)
            response, outputs, wanted = await self.oip.infer_arrays(message, deadline)
            if not parsed.get("outputs"):  # none named: every output, binary only when binary_data_output says so
                binary = _binary_output(parsed)
                wanted = [(name, binary) for name, _ in wanted]
            return infer_response(response, outputs, wanted)

        result, err = await self.oip.gate.outcome("ModelInfer", model, work, protocol="http")
        if err is not None:
            return self.front.error(err)
        body, header_length = result
        if header_length is None:
            return web.Response(body=body, content_type="application/json")
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(header_length)})
