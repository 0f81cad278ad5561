"""ganserve.v1.Images: image bytes in, image bytes (or class probabilities) out, driven by the model card."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import grpc
import numpy as np

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.serving import status
from ganserve.serving.calls import CallGate
from ganserve.serving.conditioning import condition_index, condition_tensor, latent_tensor
from ganserve.serving.imaging import decode_image, encode_pixels, from_layout, pad_to_multiple, to_layout, to_pixels, to_tensor
from ganserve.serving.models import ModelManager, ServedModel, ServedVersion
from ganserve.serving.proto.ganserve.v1 import images_pb2 as pb
from ganserve.serving.proto.ganserve.v1 import images_pb2_grpc as pb_grpc
from ganserve.serving.tiling import run_tiled

RPC_FOR_TASK = {
    "super_resolution": "SuperResolve", "translation": "Translate", "derain": "Derain", "face_aging": "AgeFace",
    "classification": "Classify", "generation": "Generate",
}


@dataclass
class ImageSettings:
    """Server-wide image API settings (one-to-one with the serve flags)."""

    max_pixels: int = 4096 * 4096
    tile_size: int = 128  # input pixels; 0 = no tiling
    tile_overlap: int = 16


def card_tiling(card: ModelCard) -> dict[str, int]:
    """Tile size/overlap a model card asks for (its tile_size / tile_overlap fields; 0 = no preference)."""
    found: dict[str, int] = {}
    if card.tile_size > 0:
        found["size"] = card.tile_size
    if card.tile_overlap > 0:
        found["overlap"] = card.tile_overlap
    return found


def _decoded_tensor(data: bytes, spec: TensorSpec, max_pixels: int) -> np.ndarray:
    """Image bytes -> the network's input tensor, in one trip to a worker thread."""
    return to_tensor(decode_image(data, max_pixels), spec)


def _to_encoded(y: np.ndarray, spec: TensorSpec, fmt: str, quality: int) -> tuple[tuple[int, int], bytes]:
    """Tensor -> 8-bit pixels -> PNG/JPEG bytes in one worker-thread hop; returns ((width, height), bytes)."""
    pixels = to_pixels(y, spec)
    return (pixels.shape[1], pixels.shape[0]), encode_pixels(pixels, fmt, quality)


class _Run:
    """Counts the network calls of one request and sends each through the model's batcher."""

    def __init__(self, version: ServedVersion, deadline: float | None) -> None:
        self.version, self.deadline, self.calls = version, deadline, 0

    async def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        return await self.version.batcher.submit(feeds, self.deadline)


class ImagesServicer(pb_grpc.ImagesServicer):
    """One code path per kind of request; what a model needs comes from its card."""

    def __init__(self, models: ModelManager, gate: CallGate, settings: ImageSettings) -> None:
        self.models, self.gate, self.settings = models, gate, settings

    # -- helpers -----------------------------------------------------------------------------------------
    def _model(self, name: str, version: str, rpc: str) -> tuple[ServedModel, ServedVersion, ModelCard]:
        model, served = self.models.get(name, version)
        card = model.card
        if card is None:
            raise status.precondition(f"model {name!r} has no model card; call it through ModelInfer")
        if RPC_FOR_TASK[card.task] != rpc:
            raise status.invalid(f"model {name!r} is a {card.task} model; call {RPC_FOR_TASK[card.task]}, not {rpc}")
        return model, served, card

    def _tiling(self, card: ModelCard, options: pb.ImageOptions) -> tuple[int, int]:
        if not card.tile_safe:
            return 0, 0
        from_card = card_tiling(card)
        tile = options.tile_size if options.HasField("tile_size") else from_card.get("size", self.settings.tile_size)
        overlap = (options.tile_overlap if options.HasField("tile_overlap")
                   else from_card.get("overlap", self.settings.tile_overlap))
        if tile < 0 or overlap < 0:
            raise status.invalid(f"tile_size and tile_overlap must be >= 0 (got {tile}, {overlap})")
        if tile and overlap * 2 >= tile:
            raise status.invalid(f"tile_overlap {overlap} must be less than half of tile_size {tile}")
        return tile, overlap

    @staticmethod
    def _only_inputs(card: ModelCard, allowed: set[str]) -> None:
        extra = [t.name for t in card.inputs if t.role not in allowed]
        if extra:
            raise status.invalid(f"model {card.name!r} needs inputs {extra} that the image API cannot fill; use ModelInfer")

    async def _decode(self, data: bytes, spec: TensorSpec) -> np.ndarray:
        return await asyncio.to_thread(_decoded_tensor, data, spec, self.settings.max_pixels)

    async def _reply(self, y: np.ndarray, spec: TensorSpec, options: pb.ImageOptions, served: ServedVersion,
                     name: str, runs: int, t0: float, t_decoded: float, t_inferred: float) -> pb.ImageResponse:
        fmt = "JPEG" if options.output_format == pb.JPEG else "PNG"
        (width, height), data = await asyncio.to_thread(_to_encoded, y, spec, fmt, options.jpeg_quality)
        t_end = time.perf_counter()
        timing = pb.Timing(decode_ms=(t_decoded - t0) * 1e3, infer_ms=(t_inferred - t_decoded) * 1e3,
                           encode_ms=(t_end - t_inferred) * 1e3, total_ms=(t_end - t0) * 1e3)
        return pb.ImageResponse(image=data, format=pb.JPEG if fmt == "JPEG" else pb.PNG, width=width,
                                height=height, timing=timing, model=name, model_version=str(served.version),
                                tiles=runs)

    async def _image_to_image(self, rpc: str, request, context: grpc.aio.ServicerContext, condition: str | None = None):
        deadline = self.gate.deadline(context)

        async def work() -> pb.ImageResponse:
            t0 = time.perf_counter()
            model, served, card = self._model(request.model, request.model_version, rpc)
            image_spec = card.input_by_role("image") or card.inputs[0]
            out_spec = card.output_by_role("image") or card.outputs[0]
            cond_spec = card.input_by_role("condition")
            self._only_inputs(card, {"image", "condition"})
            cond_index = None
            if cond_spec is not None:
                cond_index = condition_index(cond_spec, condition or "", "target age" if rpc == "AgeFace" else "condition")
            x = await self._decode(request.image, image_spec)
            t_decoded = time.perf_counter()
            height, width = x.shape[2], x.shape[3]
            multiple = max(1, card.spatial_multiple)
            tile, overlap = self._tiling(card, request.options)
            run = _Run(served, deadline)

            async def infer(part: np.ndarray) -> np.ndarray:
                feeds = {image_spec.name: to_layout(part, image_spec)}
                if cond_spec is not None and cond_index is not None:
                    feeds[cond_spec.name] = condition_tensor(cond_spec, cond_index, part.shape[2], part.shape[3])
                return from_layout((await run(feeds))[out_spec.name], out_spec)

            start = time.perf_counter_ns()
            try:
                y = await run_tiled(pad_to_multiple(x, multiple), infer, card.scale, tile, overlap, multiple)
            except BaseException:  # also a deadline or cancel that ends the call while queued
                served.stats.record(False, time.perf_counter_ns() - start)
                raise
            served.stats.record(True, time.perf_counter_ns() - start)
            y = y[:, :, : height * card.scale, : width * card.scale]
            return await self._reply(y, out_spec, request.options, served, model.name, run.calls, t0, t_decoded,
                                     time.perf_counter())

        return await self.gate.run(context, rpc, request.model, work)

    # -- RPCs --------------------------------------------------------------------------------------------
    async def SuperResolve(self, request: pb.ImageRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._image_to_image("SuperResolve", request, context)

    async def Translate(self, request: pb.ImageRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._image_to_image("Translate", request, context)

    async def Derain(self, request: pb.ImageRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._image_to_image("Derain", request, context)

    async def AgeFace(self, request: pb.AgeFaceRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._image_to_image("AgeFace", request, context, condition=request.target_age)

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        deadline = self.gate.deadline(context)

        async def work() -> pb.ClassifyResponse:
            t0 = time.perf_counter()
            model, served, card = self._model(request.model, request.model_version, "Classify")
            image_spec = card.input_by_role("image") or card.inputs[0]
            out_spec = card.output_by_role("probabilities", "logits") or card.outputs[0]
            self._only_inputs(card, {"image"})
            if request.top_k < 0:
                raise status.invalid(f"top_k must be >= 0, got {request.top_k}")
            x = await self._decode(request.image, image_spec)
            t_decoded = time.perf_counter()
            out = await _Run(served, deadline)({image_spec.name: to_layout(x, image_spec)})
            t_inferred = time.perf_counter()
            scores = out[out_spec.name].astype(np.float64).reshape(-1)
            if out_spec.role == "logits":
                scores = np.exp(scores - scores.max())
                scores /= scores.sum()
            labels = out_spec.labels or [str(i) for i in range(scores.size)]
            order = np.argsort(-scores, kind="stable")[: min(request.top_k or 5, scores.size)]
            response = pb.ClassifyResponse(model=model.name, model_version=str(served.version))
            for i in order:
                response.scores.add(label=labels[i] if i < len(labels) else str(i), index=int(i), probability=float(scores[i]))
            t_end = time.perf_counter()
            response.timing.CopyFrom(pb.Timing(decode_ms=(t_decoded - t0) * 1e3, infer_ms=(t_inferred - t_decoded) * 1e3,
                                               encode_ms=(t_end - t_inferred) * 1e3, total_ms=(t_end - t0) * 1e3))
            return response

        return await self.gate.run(context, "Classify", request.model, work)

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        deadline = self.gate.deadline(context)

        async def work() -> pb.ImageResponse:
            t0 = time.perf_counter()
            model, served, card = self._model(request.model, request.model_version, "Generate")
            latent = card.input_by_role("latent")
            if latent is None:
                raise status.invalid(f"model {model.name!r} has no latent input")
            self._only_inputs(card, {"latent", "condition"})
            out_spec = card.output_by_role("image") or card.outputs[0]
            feeds = {latent.name: latent_tensor(latent, request.seed)}
            cond_spec = card.input_by_role("condition")
            if cond_spec is not None:
                index = condition_index(cond_spec, request.condition)
                feeds[cond_spec.name] = condition_tensor(cond_spec, index, 1, 1)
            t_decoded = time.perf_counter()
            y = from_layout((await _Run(served, deadline)(feeds))[out_spec.name], out_spec)
            return await self._reply(y, out_spec, request.options, served, model.name, 1, t0, t_decoded,
                                     time.perf_counter())

        return await self.gate.run(context, "Generate", request.model, work)

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        response = pb.ListModelsResponse()
        for name in sorted(self.models.models):
            model = self.models.models[name]
            info = response.models.add(name=name, state=model.state, reason=model.reason)
            if model.versions:
                latest = model.latest()
                info.version, info.provider = str(latest.version), latest.runner.provider
            card = model.card
            if card is not None:
                info.task, info.architecture, info.precision = card.task, card.architecture, card.precision
                info.scale, info.spatial_multiple, info.tile_safe = card.scale, card.spatial_multiple, card.tile_safe
                probs = card.output_by_role("probabilities", "logits")
                cond = card.input_by_role("condition")
                info.labels.extend((probs.labels or []) if probs else [])
                info.condition_labels.extend((cond.labels or []) if cond else [])
            if model.versions:
                info.precision = model.latest().runner.precision  # what serves, which may differ from the export
        return response
