"""Open Inference Protocol tensors <-> numpy, validated against the model config."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ganserve.serving import status
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import model_config_pb2 as mc
from ganserve.serving.shared_memory import Slot

if TYPE_CHECKING:
    from ganserve.serving.shared_memory import SharedMemory

# OIP datatype -> numpy dtype (little-endian, as the protocol's raw contents are).
NUMPY = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
# OIP datatype -> the InferTensorContents field that carries it when not sent raw.
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
}


def config_datatype(data_type: int) -> str:
    """TYPE_FP32 (config enum) -> "FP32" (protocol datatype)."""
    return mc.DataType.Name(data_type).removeprefix("TYPE_")


def datatype_of(array: np.ndarray) -> str:
    for name, dtype in NUMPY.items():
        if array.dtype == dtype:
            return name
    raise status.invalid(f"unsupported output dtype {array.dtype}")


def _check_shape(name: str, shape: list[int], dims: list[int], max_batch: int) -> None:
    expected = ([-1] if max_batch > 0 else []) + list(dims)
    if len(shape) != len(expected) or any(e != -1 and s != e for s, e in zip(shape, expected)):
        raise status.invalid(f"input {name!r}: shape {shape} does not match {expected} (-1 = any)")
    if any(s < 0 for s in shape):
        raise status.invalid(f"input {name!r}: negative dimension in shape {shape}")
    if max_batch > 0 and not 1 <= shape[0] <= max_batch:
        raise status.invalid(f"input {name!r}: batch size {shape[0]} outside 1..{max_batch} (max_batch_size)")


# The system shared-memory extension's tensor parameters (docs/shared-memory.md).
SHM_REGION, SHM_BYTE_SIZE, SHM_OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"


def _int_parameter(parameters, key: str, where: str) -> int | None:
    param = parameters.get(key)
    if param is None:
        return None
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise status.invalid(f"{where}: parameter {key!r} must be an integer, got {kind or 'nothing'}")
    value = getattr(param, kind)
    if value < 0:
        raise status.invalid(f"{where}: parameter {key!r} must not be negative, got {value}")
    return value


def shared_slot(parameters, where: str) -> Slot | None:
    """A tensor's shared-memory slot from its parameters, or None when it names no region."""
    region = parameters.get(SHM_REGION)
    if region is None:
        for key in (SHM_BYTE_SIZE, SHM_OFFSET):
            if key in parameters:
                raise status.invalid(f"{where}: parameter {key!r} without {SHM_REGION!r}")
        return None
    if region.WhichOneof("parameter_choice") != "string_param" or not region.string_param:
        raise status.invalid(f"{where}: parameter {SHM_REGION!r} must be a region's name (a string)")
    size = _int_parameter(parameters, SHM_BYTE_SIZE, where)
    if size is None:
        raise status.invalid(f"{where}: parameter {SHM_BYTE_SIZE!r} is needed with {SHM_REGION!r}")
    return Slot(region.string_param, _int_parameter(parameters, SHM_OFFSET, where) or 0, size)


def _no_shared_memory(where: str) -> status.ServingError:
    return status.precondition(f"{where} names a shared-memory region, but this server serves no shared memory")


def decode_inputs(request: pb.ModelInferRequest, config: mc.ModelConfig,
                  regions: SharedMemory | None = None) -> dict[str, np.ndarray]:
    """Numpy arrays for every input of the request, checked against the config (INVALID_ARGUMENT otherwise).

    An input whose parameters name a shared-memory region is read from it (copied) and has no raw contents: the
    raw_input_contents are the other inputs', in order, as tritonclient sends them."""
    specs = {i.name: i for i in config.input}
    raw = list(request.raw_input_contents)
    slots = [shared_slot(tensor.parameters, f"input {tensor.name!r}") for tensor in request.inputs]
    sent = sum(slot is None for slot in slots)
    if raw and len(raw) != sent:
        raise status.invalid(f"{len(raw)} raw_input_contents for {sent} inputs not in shared memory; send one per "
                             "input")
    arrays: dict[str, np.ndarray] = {}
    next_raw = 0
    for tensor, slot in zip(request.inputs, slots):
        spec = specs.get(tensor.name)
        if spec is None:
            raise status.invalid(f"unknown input {tensor.name!r} (model inputs: {', '.join(specs)})")
        if tensor.name in arrays:
            raise status.invalid(f"input {tensor.name!r} given twice")
        want = config_datatype(spec.data_type)
        if tensor.datatype != want:
            raise status.invalid(f"input {tensor.name!r}: datatype {tensor.datatype!r}, the model expects {want!r}")
        shape = list(tensor.shape)
        _check_shape(tensor.name, shape, list(spec.dims), config.max_batch_size)
        dtype = NUMPY[want]
        count = math.prod(shape)  # exact: np.prod wraps past int64, and a wrapped count can match the bytes sent
        if slot is not None:
            if regions is None:
                raise _no_shared_memory(f"input {tensor.name!r}")
            array = regions.read(slot, dtype, shape, f"input {tensor.name!r}")
        elif raw:
            data = raw[next_raw]
            next_raw += 1
            if len(data) != count * dtype.itemsize:
                raise status.invalid(f"input {tensor.name!r}: {len(data)} bytes for shape {shape} {want} "
                                     f"(expected {count * dtype.itemsize})")
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        else:
            field = CONTENTS_FIELD.get(want)
            if field is None:
                raise status.invalid(f"input {tensor.name!r}: {want} must be sent in raw_input_contents")
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise status.invalid(f"input {tensor.name!r}: {len(values)} values for shape {shape} (expected {count})")
            array = np.asarray(values, dtype=dtype).reshape(shape)
            if dtype.kind in "iu" and dtype.itemsize < 4:  # int_contents / uint_contents are 32-bit: check the range
                wide = np.asarray(values, dtype=np.int64)
                info = np.iinfo(dtype)
                bad = wide[(wide < info.min) | (wide > info.max)]
                if bad.size:
                    raise status.invalid(f"input {tensor.name!r}: value {int(bad[0])} is outside the {want} range "
                                         f"{info.min}..{info.max}")
        arrays[tensor.name] = array.astype(dtype.newbyteorder("="), copy=False)
    missing = [name for name, spec in specs.items() if name not in arrays and not spec.optional]
    if missing:
        raise status.invalid(f"missing input(s) {missing}")
    return arrays


def requested_outputs(request: pb.ModelInferRequest, config: mc.ModelConfig) -> list[tuple[str, bool]]:
    """(output name, send raw) for each output to return; all of them, raw, when none is named."""
    known = [o.name for o in config.output]
    if not request.outputs:
        return [(name, True) for name in known]
    chosen = []
    for out in request.outputs:
        if out.name not in known:
            raise status.invalid(f"unknown output {out.name!r} (model outputs: {', '.join(known)})")
        param = out.parameters.get("binary_data")
        chosen.append((out.name, True if param is None or param.WhichOneof("parameter_choice") != "bool_param"
                       else param.bool_param))
    return chosen


def shared_outputs(request: pb.ModelInferRequest, regions: SharedMemory | None) -> dict[str, Slot]:
    """The requested outputs to write into shared-memory regions, by name."""
    slots = {}
    for out in request.outputs:
        slot = shared_slot(out.parameters, f"output {out.name!r}")
        if slot is not None:
            if regions is None:
                raise _no_shared_memory(f"output {out.name!r}")
            slots[out.name] = slot
    return slots


def slot_parameters(parameters, slot: Slot, written: int) -> None:
    """Say in an answer's output parameters which region holds it: the request's region and offset, and the byte
    count written (the request's slot may be larger than the tensor)."""
    parameters[SHM_REGION].string_param = slot.region
    parameters[SHM_BYTE_SIZE].int64_param = written
    if slot.offset:
        parameters[SHM_OFFSET].int64_param = slot.offset


def _fill_outputs(response: pb.ModelInferResponse, outputs: dict[str, np.ndarray],
                  wanted: list[tuple[str, bool]], shared: dict[str, Slot] | None = None) -> list[np.ndarray]:
    """Add every output's metadata (and typed contents when none is raw); return the arrays to send raw, in order.

    An output in `shared` (already written into its region) carries its slot's parameters and no contents; when
    other outputs go raw it gets an empty raw entry, so raw_output_contents[i] stays outputs[i]'s."""
    shared = shared or {}
    any_raw = any(raw for name, raw in wanted if name not in shared)
    raws = []
    for name, raw in wanted:
        array = outputs[name]
        dtype_name = datatype_of(array)
        tensor = response.outputs.add(name=name, datatype=dtype_name, shape=list(array.shape))
        if name in shared:
            slot_parameters(tensor.parameters, shared[name], array.nbytes)
            if any_raw:
                raws.append(np.empty(0, np.uint8))
        elif any_raw:
            raws.append(np.ascontiguousarray(array, dtype=NUMPY[dtype_name]))
        else:
            field = CONTENTS_FIELD.get(dtype_name)
            if field is None:
                raise status.invalid(f"output {name!r}: {dtype_name} can only be returned raw (binary_data)")
            getattr(tensor.contents, field).extend(array.ravel().tolist())
    return raws


# ModelInferResponse.raw_output_contents is field 6, length-delimited: tag byte (6 << 3) | 2.
_RAW_OUTPUT_TAG = bytes([(6 << 3) | 2])


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int (a length prefix)."""
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def serialized_response(response: pb.ModelInferResponse, outputs: dict[str, np.ndarray],
                        wanted: list[tuple[str, bool]], shared: dict[str, Slot] | None = None) -> bytes:
    """The wire bytes of `response` with its outputs, the raw tensors copied once, straight from the arrays.

    Equal to filling raw_output_contents and calling SerializeToString (protobuf parsers accept a repeated field's
    elements after the other fields), but without the two intermediate copies of every output (tobytes, then the
    message's own), which cost milliseconds on a multi-megabyte SR output.
    """
    raws = _fill_outputs(response, outputs, wanted, shared)
    parts: list[bytes | memoryview] = [response.SerializeToString()]
    for array in raws:
        view = memoryview(array.reshape(-1).view(np.uint8))
        parts += [_RAW_OUTPUT_TAG, varint(view.nbytes), view]
    return b"".join(parts)
