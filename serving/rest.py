"""KServe v2 / Open Inference Protocol over HTTP/REST, with the binary tensor data extension.

Every answer comes from the same transport-free methods the gRPC servicer wraps (serving/oip.py), through the same
CallGate, so both protocols share the model manager, the batchers, the metrics and the error classes: a
ServingError's gRPC code maps onto its HTTP status (serving/status.py) and the body is ``{"error": "..."}``.

Binary extension: a request whose JSON header is followed by raw tensor bytes says the header's length in
``Inference-Header-Content-Length``; each binary input names its byte count in ``parameters.binary_data_size``, in
input order. Outputs come back binary when asked (``outputs[].parameters.binary_data`` or the request's
``parameters.binary_data_output``), with the same header on the reply.

System shared memory (docs/shared-memory.md): ``/v2/systemsharedmemory[/region/{name}]/status|register|unregister``
manage regions; an input or output whose parameters name ``shared_memory_region`` (with
``shared_memory_byte_size`` and optionally ``shared_memory_offset``) is read from or written into that region, and
the answer's entry for such an output carries those parameters instead of data.

JSON: a request's JSON part (the whole body, or the header under the binary extension) over --max-json-mb is
refused with 413 before it is read or parsed. Parsing JSON into tensors and writing tensors as JSON hold the GIL for
the whole call, so a thread would still stall the event loop: above INLINE_BYTES that work runs in one worker
process (JsonWork; measured in docs/http.md).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, TypeVar

import grpc
import numpy as np
from aiohttp import web
from google.protobuf.descriptor import FieldDescriptor

from ganserve.serving import status
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.shared_memory import CUDA_REFUSAL, Slot, unimplemented
from ganserve.serving.tensors import NUMPY, SHM_BYTE_SIZE, SHM_OFFSET, SHM_REGION, datatype_of

if TYPE_CHECKING:  # only for annotations: the JSON worker process imports this module, and oip pulls in the models
    from ganserve.serving.oip import InferenceServicer

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL = "/v2/models/{model}"
MODEL_VERSION = "/v2/models/{model}/versions/{version}"
# JSON work that costs less than parsing this many bytes stays on the event loop: about 1 ms there, which the
# worker's round trip (0.5-0.8 ms, and the copies) would mostly add to the request instead (docs/http.md).
INLINE_BYTES = 64 * 1024
# Writing one number of an answer as JSON costs about as much as parsing this many bytes of a request (~1.2 us per
# value against ~15 ns per byte, measured): answers of 1,024 values or more are written in the worker.
ENCODE_COST_BYTES = 64
T = TypeVar("T")


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
class Parsed(NamedTuple):
    """A v2 infer header, checked and turned into a ModelInferRequest (picklable: it comes back from the worker).

    ``message`` is the serialized request with every JSON "data" input already raw; each binary input has an
    empty raw placeholder that ``slices`` (input index, start, size in the binary part) fill."""

    message: bytes
    slices: list[tuple[int, int, int]]
    outputs_named: bool
    binary_output: bool
    timeout_us: float | None


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise status.invalid(f"{where} must be a JSON object")
    return value


def _parameters(value: dict[str, Any], where: str) -> dict[str, Any]:
    return _object(value.get("parameters", {}), f"{where}.parameters")


def _shared_parameters(params: dict[str, Any], target: Any, name: str) -> bool:
    """Copy a tensor's shared-memory parameters from JSON into protobuf `target` (region a string, sizes integers);
    whether the tensor names a region. serving/tensors.py checks them further (shared_slot)."""
    for key in (SHM_REGION, SHM_BYTE_SIZE, SHM_OFFSET):
        value = params.get(key)
        if value is None:
            continue
        if key == SHM_REGION:
            if not isinstance(value, str):
                raise status.invalid(f"{name}: parameters.{key} must be a region's name (a string)")
            target[key].string_param = value
        else:
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
                raise status.invalid(f"{name}: parameters.{key} must be a non-negative integer, got {value!r}")
            target[key].int64_param = value
    return SHM_REGION in target


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
        with np.errstate(over="raise"):  # 1e300 as FP32 is refused, not sent on as infinity
            array = np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError, FloatingPointError) as exc:
        raise status.invalid(f"input {name!r}: \"data\" is not an array of {datatype} values ({exc})") from exc
    return array.ravel().tobytes()


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """A v2 infer body as its JSON header and its binary part (empty without the binary extension)."""
    if header_length is None:
        return body, memoryview(b"")
    length = byte_count(header_length)
    if length is None or length > len(body):
        raise status.invalid(f"{HEADER_LENGTH} {header_length!r} must be a byte count within the body's "
                             f"{len(body)} bytes")
    return body[:length], memoryview(body)[length:]


def byte_count(text: str) -> int | None:
    """A header's decimal byte count, or None when it is not one (int() would also take "+5", "1_0" or " 5 ", and
    refuse 5,000 digits with an error of its own)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def parse_header(model: str, version: str, header: bytes, binary_length: int) -> Parsed:
    """Check a v2 infer JSON header and build its ModelInferRequest: the costly part of a JSON request (json.loads
    and the "data" arrays), pure, so JsonWork can run it in the worker process."""
    try:
        request = json.loads(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise status.invalid(f"the request's JSON header does not parse: {exc}") from exc
    except RecursionError as exc:
        raise status.invalid("the request's JSON header nests too deeply to parse") from exc
    try:
        return _checked(model, version, _object(request, "the request"), binary_length)
    except RecursionError as exc:  # str() of a deeply nested "id"
        raise status.invalid("the request's JSON header nests too deeply") from exc
    except UnicodeEncodeError as exc:  # a name or id with a lone surrogate ("\ud800"), which protobuf cannot hold
        text = exc.object[:80]
        raise status.invalid(f"the request holds a string that is not valid Unicode: {text!r} ({exc.reason})") from exc


def _checked(model: str, version: str, request: dict[str, Any], binary_length: int) -> Parsed:
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise status.invalid('the request needs "inputs": a non-empty array of tensors')
    message = pb.ModelInferRequest(model_name=model, model_version=version, id=str(request.get("id", "")))
    slices: list[tuple[int, int, int]] = []
    offset = 0
    for index, item in enumerate(inputs):
        where = f"inputs[{index}]"
        item = _object(item, where)
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise status.invalid(f'{where} needs a "name" and a "datatype" string')
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise status.invalid(f'input {name!r}: "shape" must be an array of integers')
        params = _parameters(item, where)
        size = params.get("binary_data_size")
        tensor = message.inputs.add(name=name, datatype=datatype)
        if _shared_parameters(params, tensor.parameters, f"input {name!r}"):
            raw = None
        elif size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > binary_length:
                raise status.invalid(f"input {name!r}: binary_data_size {size!r} is more than the "
                                     f"{binary_length - offset} binary bytes left in the body")
            slices.append((len(message.raw_input_contents), offset, size))
            offset += size
            raw = b""
        elif "data" in item:
            raw = _json_tensor(item["data"], datatype, name)
        else:
            raise status.invalid(f'input {name!r} has neither "data", parameters.binary_data_size nor '
                                 f'parameters.{SHM_REGION}')
        try:
            tensor.shape.extend(shape)
        except ValueError as exc:  # a dimension outside int64
            raise status.invalid(f"input {name!r}: shape {shape}: {exc}") from exc
        if raw is not None:  # an input in shared memory has no raw contents (as tritonclient.grpc sends it)
            message.raw_input_contents.append(raw)
    if offset != binary_length:
        raise status.invalid(f"{binary_length - offset} binary bytes after the last binary input; the header's "
                             "binary_data_size values must add up to the binary part")
    binary_output = _binary_output(request)
    outputs = _outputs_list(request)
    for index, item in enumerate(outputs):
        out = _object(item, f"outputs[{index}]")
        params = _parameters(out, f"outputs[{index}]")
        if "classification" in params:
            raise status.invalid("the classification extension is not served; ask for the tensor, or call the image "
                                 "API's classify endpoint")
        wanted = message.outputs.add(name=str(out.get("name", "")))
        wanted.parameters["binary_data"].bool_param = bool(params.get("binary_data", binary_output))
        _shared_parameters(params, wanted.parameters, f"output {wanted.name!r}")
    return Parsed(message.SerializeToString(), slices, bool(outputs), binary_output, _timeout(request))


def _outputs_list(request: dict[str, Any]) -> list[Any]:
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise status.invalid('"outputs" must be an array')
    return outputs


def _binary_output(request: dict[str, Any]) -> bool:
    return bool(_parameters(request, "the request").get("binary_data_output", False))


def _timeout(request: dict[str, Any]) -> float | None:
    """parameters.timeout: microseconds, as tritonclient sends it (the deadline is taken from it on the loop)."""
    timeout = _parameters(request, "the request").get("timeout")
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
        raise status.invalid(f"parameters.timeout must be a positive number of microseconds, got {timeout!r}")
    return float(timeout)


def infer_message(parsed: Parsed, binary: memoryview) -> pb.ModelInferRequest:
    """The ModelInferRequest of a parsed header, its binary inputs cut from the body's binary part (slices name
    raw_input_contents indexes: inputs in shared memory have none)."""
    message = pb.ModelInferRequest.FromString(parsed.message)
    for index, start, size in parsed.slices:
        message.raw_input_contents[index] = bytes(binary[start:start + size])
    return message


def infer_request(model: str, version: str, body: bytes, header_length: str | None
                  ) -> tuple[pb.ModelInferRequest, Parsed]:
    """Parse a v2 REST infer body, on the calling thread, into a ModelInferRequest (every input raw) and its header."""
    header, binary = split_body(body, header_length)
    parsed = parse_header(model, version, header, len(binary))
    return infer_message(parsed, binary), parsed


# -- arrays -> JSON answer ------------------------------------------------------------------------------------------
def _json_values(array: np.ndarray) -> list[Any]:
    flat = array.ravel()
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        return [v if math.isfinite(v) else None for v in flat.tolist()]
    return flat.tolist()


def encode_header(header: dict[str, Any], data: dict[int, np.ndarray]) -> bytes:
    """The answer's JSON header with ``data`` (output index -> array) written in as JSON arrays: the costly part of
    a JSON answer, pure, so JsonWork can run it in the worker process."""
    for index, array in data.items():
        header["outputs"][index]["data"] = _json_values(array)
    return json.dumps(header, separators=(",", ":")).encode()


def answer_parts(response: pb.ModelInferResponse, outputs: dict[str, np.ndarray], wanted: list[tuple[str, bool]],
                 shared: dict[str, Slot] | None = None
                 ) -> tuple[dict[str, Any], dict[int, np.ndarray], list[memoryview]]:
    """The answer's JSON header without its JSON data, the arrays that go in as JSON, and the binary outputs' bytes.
    An output in `shared` was written into its region: its entry carries the region's parameters, no data."""
    header: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version,
                              "outputs": []}
    if response.id:
        header["id"] = response.id
    data: dict[int, np.ndarray] = {}
    blobs: list[memoryview] = []
    for index, (name, binary) in enumerate(wanted):
        array = outputs[name]
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if shared and name in shared:
            slot = shared[name]
            entry["parameters"] = {SHM_REGION: slot.region, SHM_BYTE_SIZE: array.nbytes}
            if slot.offset:
                entry["parameters"][SHM_OFFSET] = slot.offset
        elif binary:
            blob = memoryview(np.ascontiguousarray(array, dtype=NUMPY[datatype]).reshape(-1).view(np.uint8))
            entry["parameters"] = {"binary_data_size": blob.nbytes}
            blobs.append(blob)
        else:
            data[index] = array
        header["outputs"].append(entry)
    return header, data, blobs


def _joined(head: bytes, blobs: list[memoryview]) -> tuple[bytes, int | None]:
    """The reply body, and the length of its JSON header when any output is binary."""
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def _register_body(body: bytes) -> tuple[str, int, int]:
    """A region registration's JSON {"key": str, "offset": int (default 0), "byte_size": int}."""
    try:
        options = _object(json.loads(body), "the request")
    except (ValueError, RecursionError) as exc:
        raise status.invalid('the request body must be JSON: {"key": "/name", "offset": 0, "byte_size": N}') from exc
    key, offset, size = options.get("key"), options.get("offset", 0), options.get("byte_size")
    if not isinstance(key, str):
        raise status.invalid('the request needs "key": the shared-memory object\'s name, e.g. "/my_region"')
    for field, value in (("offset", offset), ("byte_size", size)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**64:
            raise status.invalid(f'"{field}" must be a non-negative integer, got {value!r}')
    return key, offset, size


def _ready_only(body: bytes) -> bool:
    """The repository index request's "ready" flag (an empty body asks for every model)."""
    try:
        options = _object(json.loads(body) if body.strip() else {}, "the request")
    except (ValueError, RecursionError) as exc:
        raise status.invalid("the request body must be JSON, e.g. {\"ready\": true}") from exc
    return bool(options.get("ready", False))


# -- where the JSON work runs ---------------------------------------------------------------------------------------
def _reported(function: Callable[..., T], *args: Any) -> tuple[T | None, tuple[str, str, int | None] | None]:
    """Run `function` in the worker; a ServingError comes back as its parts (it does not survive pickling)."""
    try:
        return function(*args), None
    except status.ServingError as err:
        return None, (err.code.name, err.message, err.http)


def _started_worker() -> ProcessPoolExecutor:
    """One worker process, forked from a forkserver that has imported this module (never from the server process,
    whose gRPC threads a fork would copy; and never re-running the server's __main__), and ready to take work."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
    pool.submit(int).result()
    return pool


class JsonWork:
    """Runs a REST request's JSON work (parse a header into tensors, write tensors as JSON) off the event loop.

    json.loads, np.asarray(list) and json.dumps hold the GIL for the whole call, so in a thread they still stall the
    loop (health checks waited as long as the parse: docs/http.md). Work of INLINE_BYTES or more goes to one worker
    process, started at the first such request and shut down with the HTTP front; smaller work stays on the loop.
    """

    mode = "process"  # "loop" and "thread" exist for benchmarks/json_loop.py's before/after, nothing else

    def __init__(self, inline_bytes: int = INLINE_BYTES) -> None:
        self.inline_bytes = inline_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._starting = asyncio.Lock()

    async def run(self, size: int, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` for work of about `size` bytes of JSON: on the loop when small, else off it."""
        if size < self.inline_bytes or self.mode == "loop":
            return function(*args)
        if self.mode == "thread":
            return await asyncio.to_thread(function, *args)
        pool = await self._worker()
        try:
            result, error = await asyncio.wrap_future(pool.submit(_reported, function, *args))
        except BrokenProcessPool as exc:  # the worker died (killed, out of memory): the next request starts another
            if self._pool is pool:
                self._pool = None
            raise status.unavailable("the JSON worker process stopped; retry the request") from exc
        if error is not None:
            code, message, http = error
            raise status.ServingError(grpc.StatusCode[code], message, http)
        return result  # type: ignore[return-value]

    async def _worker(self) -> ProcessPoolExecutor:
        async with self._starting:
            if self._pool is None:  # started in a thread: starting a process takes a while, the loop must not wait
                self._pool = await asyncio.to_thread(_started_worker)
            return self._pool

    async def close(self) -> None:
        """Stop the worker process, if one was started (the HTTP front has finished every request by now)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


# -- handlers ------------------------------------------------------------------------------------------------------
class KServeRest:
    """The v2 REST routes over one InferenceServicer; `front` reads bodies, answers errors and holds the limits
    (serving/http.py). The JSON worker stops when the front's application is cleaned up (HttpFront.stop)."""

    def __init__(self, oip: InferenceServicer, front: Any) -> None:
        self.oip, self.front = oip, front
        self.json = JsonWork()
        front.app.on_cleanup.append(self._cleanup)

    async def _cleanup(self, app: web.Application) -> None:
        await self.json.close()

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
        for base in ("/v2/systemsharedmemory", "/v2/systemsharedmemory/region/{region}"):
            # status is POST in the protocol's text and GET in tritonclient.http: both are served
            r += [web.get(base + "/status", self.shm_status), web.post(base + "/status", self.shm_status),
                  web.post(base + "/unregister", self.shm_unregister)]
        r.append(web.post("/v2/systemsharedmemory/region/{region}/register", self.shm_register))
        for base in ("/v2/cudasharedmemory", "/v2/cudasharedmemory/region/{region}"):
            r += [web.get(base + "/status", self.cuda_shm), web.post(base + "/status", self.cuda_shm),
                  web.post(base + "/unregister", self.cuda_shm)]
        r.append(web.post("/v2/cudasharedmemory/region/{region}/register", self.cuda_shm))
        return r

    @staticmethod
    def _names(request: web.Request) -> tuple[str, str]:
        return request.match_info.get("model", ""), request.match_info.get("version", "")

    # -- the JSON cap -----------------------------------------------------------------------------------------
    def _json_over(self, length: int) -> status.ServingError:
        limits = self.front.limits
        return status.too_large(
            f"the request's JSON of {length} bytes is over the server's limit of {limits.max_json_bytes} bytes "
            f"(--max-json-mb {limits.max_json_mb:g}); send large tensors with the binary tensor data extension "
            f"(raw bytes after the JSON header, its length in {HEADER_LENGTH}, each input's in "
            "parameters.binary_data_size; tritonclient does this with binary_data=True)")

    def _declared_json(self, request: web.Request) -> None:
        """413 when the JSON part is declared over --max-json-mb: checked before the body is read."""
        header_length = request.headers.get(HEADER_LENGTH)
        declared = request.content_length if header_length is None else byte_count(header_length)
        if declared is not None and declared > self.front.limits.max_json_bytes:
            raise self._json_over(declared)

    async def _json_body(self, request: web.Request) -> tuple[bytes, memoryview]:
        """The body as its JSON part and binary part, the JSON part within --max-json-mb (declared or not)."""
        self._declared_json(request)
        header, binary = split_body(await self.front.body(request), request.headers.get(HEADER_LENGTH))
        if len(header) > self.front.limits.max_json_bytes:  # a chunked body declares no length
            raise self._json_over(len(header))
        return header, binary

    # -- routes -----------------------------------------------------------------------------------------------
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
        body, _ = await self._json_body(request)
        ready_only = await self.json.run(len(body), _ready_only, body)
        index = self.oip.repository_index(ready_only)
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

    # -- system shared memory -----------------------------------------------------------------------------------
    async def shm_status(self, request: web.Request) -> web.Response:
        """A JSON array of the regions, each {"name", "key", "offset", "byte_size"}, as Triton answers."""
        name = request.match_info.get("region", "")
        await self.front.body(request)

        async def work() -> list[dict[str, Any]]:
            regions = self.oip.shared_memory_status(name).regions
            return [proto_dict(regions[n], defaults=True) for n in sorted(regions)]
        return await self._answer("SystemSharedMemoryStatus", "", work)

    async def shm_register(self, request: web.Request) -> web.Response:
        name = request.match_info["region"]

        async def work() -> dict[str, Any]:
            body, _ = await self._json_body(request)
            key, offset, size = _register_body(body)
            self.oip.shared_memory.register(name, key, offset, size)
            return {}
        return await self._answer("SystemSharedMemoryRegister", "", work)

    async def shm_unregister(self, request: web.Request) -> web.Response:
        name = request.match_info.get("region", "")
        await self.front.body(request)

        async def work() -> dict[str, Any]:
            self.oip.shared_memory.unregister(name)
            return {}
        return await self._answer("SystemSharedMemoryUnregister", "", work)

    async def cuda_shm(self, request: web.Request) -> web.Response:
        await self.front.body(request)

        async def work() -> dict[str, Any]:
            raise unimplemented(CUDA_REFUSAL)
        return await self._answer("CudaSharedMemory", "", work)

    async def infer(self, request: web.Request) -> web.Response:
        model, version = self._names(request)

        async def work() -> tuple[bytes, int | None]:
            header, binary = await self._json_body(request)
            parsed = await self.json.run(len(header), parse_header, model, version, header, len(binary))
            deadline = None if parsed.timeout_us is None else time.monotonic() + parsed.timeout_us / 1e6
            response, outputs, wanted, shared = await self.oip.infer_arrays(infer_message(parsed, binary), deadline)
            if not parsed.outputs_named:  # none named: every output, binary only when binary_data_output says so
                wanted = [(name, parsed.binary_output) for name, _ in wanted]
            head, data, blobs = answer_parts(response, outputs, wanted, shared)
            size = ENCODE_COST_BYTES * sum(array.size for array in data.values())
            return _joined(await self.json.run(size, encode_header, head, data), blobs)

        result, err = await self.oip.gate.outcome("ModelInfer", model, work, protocol="http")
        if err is not None:
            return self.front.error(err)
        body, header_length = result
        if header_length is None:
            return web.Response(body=body, content_type="application/json")
        return web.Response(body=body, content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(header_length)})
