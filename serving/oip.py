"""inference.GRPCInferenceService: the KServe v2 / Open Inference Protocol servicer."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError

import ganserve.serving
from ganserve.serving import status
from ganserve.serving.admission import infer_cost
from ganserve.serving.call_gate import CallGate
from ganserve.serving.model_manager import READY, UNAVAILABLE, ModelManager
from ganserve.serving.proto.inference import grpc_service_pb2 as pb
from ganserve.serving.proto.inference import grpc_service_pb2_grpc as pb_grpc
from ganserve.serving.shared_memory import CUDA_REFUSAL, SharedMemory, Slot, unimplemented
from ganserve.serving.tensors import (config_datatype, decode_inputs, requested_outputs, serialized_response,
                                      shared_outputs, varint)

T = TypeVar("T")
EXTENSIONS = ["model_configuration", "model_repository", "statistics", "binary_tensor_data", "system_shared_memory"]


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Answers every OIP call from the ModelManager; inference goes through each model's batcher."""

    def __init__(self, models: ModelManager, gate: CallGate, allow_model_control: bool = False,
                 shared_memory: SharedMemory | None = None) -> None:
        self.models = models
        self.gate = gate
        self.allow_model_control = allow_model_control
        self.shared_memory = shared_memory if shared_memory is not None else SharedMemory(False, "not configured")

    # -- the protocol's answers, without a transport: gRPC below and REST (serving/rest.py) call these ------------
    def server_ready(self) -> bool:
        return not (self.gate.closing or self.gate.draining)

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.models.get(name, version)
        except status.ServingError:
            return False
        return self.server_ready()

    def server_metadata(self) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="ganserve", version=ganserve.serving.__version__, extensions=EXTENSIONS)

    def model_metadata(self, name: str, version: str = "") -> pb.ModelMetadataResponse:
        model, _ = self.models.get(name, version)
        config = model.config
        batch = [-1] if config.max_batch_size > 0 else []
        response = pb.ModelMetadataResponse(name=model.name, platform=config.platform or "onnxruntime_onnx",
                                            versions=[str(v) for v in sorted(model.versions)])
        for spec in config.input:
            response.inputs.add(name=spec.name, datatype=config_datatype(spec.data_type), shape=batch + list(spec.dims))
        for spec in config.output:
            response.outputs.add(name=spec.name, datatype=config_datatype(spec.data_type), shape=batch + list(spec.dims))
        return response

    def model_config(self, name: str, version: str = "") -> pb.ModelConfigResponse:
        model, _ = self.models.get(name, version)
        return pb.ModelConfigResponse(config=model.config)

    async def infer_arrays(self, request: pb.ModelInferRequest, deadline: float | None
                           ) -> tuple[pb.ModelInferResponse, dict[str, np.ndarray], list[tuple[str, bool]],
                                      dict[str, Slot]]:
        """One inference: the response header (no outputs yet), every output array, which outputs to send and
        which of them are already written into shared-memory regions (by name, with their slots)."""
        async with self.models.lease(request.model_name, request.model_version) as (model, version):
            inputs = decode_inputs(request, model.config, self.shared_memory)
            wanted = requested_outputs(request, model.config)
            shared = shared_outputs(request, self.shared_memory)
            cost, _ = infer_cost(model.card, inputs, version.cost)
            start = time.perf_counter_ns()
            try:
                async with self.gate.memory(cost, deadline, f"this inference on {model.name!r}"):
                    outputs = await version.batcher.submit(inputs, deadline)
            except BaseException:  # also a deadline or cancel that ends the call while queued
                version.stats.record(False, time.perf_counter_ns() - start)
                raise
            version.stats.record(True, time.perf_counter_ns() - start)
            for name, slot in shared.items():
                self.shared_memory.write(slot, outputs[name], f"output {name!r}")
            return pb.ModelInferResponse(model_name=model.name, model_version=str(version.version), id=request.id), \
                outputs, wanted, shared

    async def _infer(self, request: pb.ModelInferRequest, deadline: float | None) -> bytes:
        """One inference, answered as the serialized ModelInferResponse (raw outputs copied once)."""
        return serialized_response(*await self.infer_arrays(request, deadline))

    # -- the system shared-memory extension (serving/shared_memory.py) -------------------------------------------
    def shared_memory_status(self, name: str = "") -> pb.SystemSharedMemoryStatusResponse:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in self.shared_memory.status(name):
            entry = response.regions[region.name]
            entry.name, entry.key, entry.offset, entry.byte_size = (region.name, region.key, region.offset,
                                                                    region.byte_size)
        return response

    def statistics(self, name: str = "", version: str = "") -> pb.ModelStatisticsResponse:
        if name:
            model, only = self.models.get(name, version)
            targets = [(model.name, v) for v in model.versions.values() if not version or v is only]
        else:
            targets = [(m.name, v) for m in self.models.models.values() if m.state == READY for v in m.versions.values()]
        response = pb.ModelStatisticsResponse()
        for model_name, v in targets:
            s = v.stats
            entry = response.model_stats.add(name=model_name, version=str(v.version), last_inference=s.last_inference_ms,
                                             inference_count=s.inference_count, execution_count=s.execution_count)
            inf = entry.inference_stats
            inf.success.count, inf.success.ns = s.success_count, s.success_ns
            inf.fail.count, inf.fail.ns = s.fail_count, s.fail_ns
            inf.queue.count, inf.queue.ns = s.queue_count, s.queue_ns
            inf.compute_infer.count, inf.compute_infer.ns = s.compute_count, s.compute_ns
            for rows, (count, ns) in sorted(s.batch_counts.items()):
                b = entry.batch_stats.add(batch_size=rows)
                b.compute_infer.count, b.compute_infer.ns = count, ns
        return response

    def repository_index(self, ready_only: bool = False) -> pb.RepositoryIndexResponse:
        """Every model folder: the served models with their state, and the skipped folders as UNAVAILABLE with why."""
        response = pb.RepositoryIndexResponse()
        skipped = {} if ready_only else self.models.skipped
        for name in sorted(set(self.models.models) | set(skipped)):
            model = self.models.models.get(name)
            if model is None:
                response.models.add(name=name, state=UNAVAILABLE, reason=skipped[name])
                continue
            if ready_only and model.state != READY:
                continue
            version = str(max(model.versions)) if model.versions else ""
            response.models.add(name=name, version=version, state=model.state, reason=model.reason)
        return response

    def _check_control(self) -> None:
        if not self.allow_model_control:
            raise status.precondition("model control is disabled; start the server with --allow-model-control")

    async def load_model(self, name: str) -> None:
        self._check_control()
        model = await self.models.load(name)
        if model.state != READY:
            raise status.precondition(f"model {name!r} failed to load: {model.reason}")

    async def unload_model(self, name: str) -> None:
        self._check_control()
        await self.models.unload(name)

    # -- gRPC --------------------------------------------------------------------------------------------
    async def ServerLive(self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.server_ready())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext) -> pb.ServerMetadataResponse:
        return self.server_metadata()

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext) -> pb.ModelMetadataResponse:
        return await self.gate.run(context, "ModelMetadata", request.name,
                                   _now(self.model_metadata, request.name, request.version))

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: grpc.aio.ServicerContext) -> pb.ModelConfigResponse:
        return await self.gate.run(context, "ModelConfig", request.name,
                                   _now(self.model_config, request.name, request.version))

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext) -> bytes:
        deadline = self.gate.deadline(context)
        return await self.gate.run(context, "ModelInfer", request.model_name, lambda: self._infer(request, deadline))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[pb.ModelInferRequest],
                               context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently (so they can share batches); answers come back in request order."""
        deadline = self.gate.deadline(context)
        pending: asyncio.Queue[asyncio.Task | None] = asyncio.Queue()

        async def one(request: pb.ModelInferRequest) -> pb.ModelStreamInferResponse | bytes:
            result, err = await self.gate.outcome("ModelStreamInfer", request.model_name,
                                                  lambda: self._infer(request, deadline))
            if err is not None:
                return pb.ModelStreamInferResponse(error_message=f"{err.code.name}: {err.message}")
            return stream_answer(result)

        async def reader() -> None:
            try:
                async for request in request_iterator:
                    await pending.put(asyncio.create_task(one(request)))
            finally:
                await pending.put(None)

        read_task = asyncio.create_task(reader())
        try:
            while (task := await pending.get()) is not None:
                yield await task
        finally:
            read_task.cancel()
            while not pending.empty():
                leftover = pending.get_nowait()
                if leftover is not None:
                    leftover.cancel()

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: grpc.aio.ServicerContext) -> pb.ModelStatisticsResponse:
        return await self.gate.run(context, "ModelStatistics", request.name,
                                   _now(self.statistics, request.name, request.version))

    async def SystemSharedMemoryStatus(self, request: pb.SystemSharedMemoryStatusRequest,
                                       context: grpc.aio.ServicerContext) -> pb.SystemSharedMemoryStatusResponse:
        return await self.gate.run(context, "SystemSharedMemoryStatus", "",
                                   _now(self.shared_memory_status, request.name))

    async def SystemSharedMemoryRegister(self, request: pb.SystemSharedMemoryRegisterRequest,
                                         context: grpc.aio.ServicerContext) -> pb.SystemSharedMemoryRegisterResponse:
        def register() -> pb.SystemSharedMemoryRegisterResponse:
            self.shared_memory.register(request.name, request.key, request.offset, request.byte_size)
            return pb.SystemSharedMemoryRegisterResponse()
        return await self.gate.run(context, "SystemSharedMemoryRegister", "", _now(register))

    async def SystemSharedMemoryUnregister(self, request: pb.SystemSharedMemoryUnregisterRequest,
                                           context: grpc.aio.ServicerContext) -> pb.SystemSharedMemoryUnregisterResponse:
        def unregister() -> pb.SystemSharedMemoryUnregisterResponse:
            self.shared_memory.unregister(request.name)
            return pb.SystemSharedMemoryUnregisterResponse()
        return await self.gate.run(context, "SystemSharedMemoryUnregister", "", _now(unregister))

    async def _cuda_shared_memory(self, method: str, context: grpc.aio.ServicerContext) -> None:
        def refuse() -> None:
            raise unimplemented(CUDA_REFUSAL)
        return await self.gate.run(context, method, "", _now(refuse))

    async def CudaSharedMemoryStatus(self, request: pb.CudaSharedMemoryStatusRequest,
                                     context: grpc.aio.ServicerContext) -> None:
        return await self._cuda_shared_memory("CudaSharedMemoryStatus", context)

    async def CudaSharedMemoryRegister(self, request: pb.CudaSharedMemoryRegisterRequest,
                                       context: grpc.aio.ServicerContext) -> None:
        return await self._cuda_shared_memory("CudaSharedMemoryRegister", context)

    async def CudaSharedMemoryUnregister(self, request: pb.CudaSharedMemoryUnregisterRequest,
                                         context: grpc.aio.ServicerContext) -> None:
        return await self._cuda_shared_memory("CudaSharedMemoryUnregister", context)

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext) -> pb.RepositoryIndexResponse:
        return self.repository_index(request.ready)

    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext) -> pb.RepositoryModelLoadResponse:
        async def work() -> pb.RepositoryModelLoadResponse:
            await self.load_model(request.model_name)
            return pb.RepositoryModelLoadResponse()
        return await self.gate.run(context, "RepositoryModelLoad", request.model_name, work)

    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext) -> pb.RepositoryModelUnloadResponse:
        async def work() -> pb.RepositoryModelUnloadResponse:
            await self.unload_model(request.model_name)
            return pb.RepositoryModelUnloadResponse()
        return await self.gate.run(context, "RepositoryModelUnload", request.model_name, work)


def _now(function: Callable[..., T], *args: object) -> Callable[[], Awaitable[T]]:
    """A synchronous answer as the awaitable work CallGate.run/outcome expect."""
    async def work() -> T:
        return function(*args)
    return work


# ModelStreamInferResponse.infer_response is field 2, length-delimited: tag byte (2 << 3) | 2.
_STREAM_INFER_TAG = bytes([(2 << 3) | 2])


def stream_answer(serialized_infer_response: bytes) -> bytes:
    """A serialized ModelStreamInferResponse around an already serialized ModelInferResponse (one copy)."""
    return b"".join([_STREAM_INFER_TAG, varint(len(serialized_infer_response)), serialized_infer_response])


def serialize(message: object) -> bytes:
    """Answers may come already serialized (ModelInfer's, see serialized_response) or as messages."""
    return message if isinstance(message, bytes) else message.SerializeToString()


def parsed_unary(method: Callable, request_type: type) -> Callable:
    """Wrap a unary servicer method so a body that is not protobuf is INVALID_ARGUMENT, not UNKNOWN."""
    async def handler(raw: bytes, context: grpc.aio.ServicerContext):
        try:
            request = request_type.FromString(raw)
        except DecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request body is not a valid {request_type.__name__} "
                                                                  f"protobuf message ({exc})")
        return await method(request, context)
    return handler


def _parsed_stream(method: Callable, request_type: type) -> Callable:
    """Wrap a bidirectional servicer method the same way: the stream ends with INVALID_ARGUMENT at a bad body."""
    async def handler(raw_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext):
        async def requests():
            async for raw in raw_iterator:
                try:
                    yield request_type.FromString(raw)
                except DecodeError as exc:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        f"stream message is not a valid {request_type.__name__} protobuf message ({exc})")
        async for answer in method(requests(), context):
            yield answer
    return handler


def add_inference_servicer(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register inference.GRPCInferenceService for `servicer`, one handler per method of the service descriptor.

    Unlike the generated registration it parses request bodies itself (a body that is not protobuf gets
    INVALID_ARGUMENT with the reason) and sends ModelInfer's pre-serialized answers as they are.
    """
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        request_type = getattr(pb, method.input_type.name)
        implementation = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                _parsed_stream(implementation, request_type), response_serializer=serialize)
        elif not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                parsed_unary(implementation, request_type), response_serializer=serialize)
        else:
            raise TypeError(f"{method.full_name}: one-way streaming methods are not served")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
