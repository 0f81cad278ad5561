"""ganserve.v1.Images: image bytes in, image bytes (or class probabilities) out, driven by the model card.

What each RPC feeds and reads comes from the roles of the card's tensors ("image", "condition", "mask", "latent",
"probabilities"/"logits"), never from its task: Transform serves every image-to-image model, and SuperResolve,
Translate, Derain and AgeFace are aliases of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Iterable, Mapping

import grpc
import numpy as np

from ganserve.core.card_roles import NEEDS, roles_text, rpc_by_outputs, rpc_for, unfillable, unfilled
from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.core.ensemble import PASSES, check_passes, self_ensemble
from ganserve.serving import status
from ganserve.serving.admission import mib
from ganserve.serving.call_gate import CallGate
from ganserve.serving.conditioning import (condition_choices, condition_tensor, latent_tensor, resolve_conditions,
                                           single_condition)
from ganserve.serving.imaging import (bucketed_shape, decode_image, encode_pixels, fixed_size, from_layout,
                                      pad_to_bucket, pad_to_multiple, to_layout, to_pixels, to_tensor)
from ganserve.serving.model_manager import ModelManager, ServedModel, ServedVersion
from ganserve.serving.proto.ganserve.v1 import images_pb2 as pb
from ganserve.serving.proto.ganserve.v1 import images_pb2_grpc as pb_grpc
from ganserve.serving.tiling import banded_window_bytes, fits_one_tile, on_grid, run_tiled, run_tiled_rows

def check_rpc(card: ModelCard, rpc: str, called: str = "") -> None:
    """INVALID_ARGUMENT unless `rpc` serves this model; the message names the RPC that does (``called`` is the
    alias the client used, when it used one)."""
    right = rpc_for(card)
    if right == rpc:
        return
    if not right and rpc_by_outputs(card) == rpc:
        check_filled(card, [t.name for t in card.inputs if t not in unfillable(card, rpc)])  # raises
    hint = f"call {right}" if right else "call it through ModelInfer"
    raise status.invalid(f"model {card.name!r} (inputs {roles_text(card.inputs)}; outputs {roles_text(card.outputs)}) "
                         f"is not served by {called or rpc}, which needs {NEEDS[rpc]}; {hint}")


def check_filled(card: ModelCard, filled: Iterable[str]) -> None:
    """INVALID_ARGUMENT when the model has inputs the image API does not fill (they need ModelInfer)."""
    extra = unfilled(card, filled)
    if extra:
        raise status.invalid(f"model {card.name!r} needs inputs {roles_text(extra)} that the image API cannot fill; "
                             "use ModelInfer")


def ensemble_passes(card: ModelCard, options: pb.ImageOptions, refused: str = "") -> int:
    """The network passes per image a request's ``ensemble`` option asks for: 1 (unset, 0 or 1) or 8 (the eight
    flips and rotations, averaged). INVALID_ARGUMENT for any other value; FAILED_PRECONDITION for 8 when ``refused``
    (why the RPC cannot ensemble) is given or the model is not tile-safe, whose output for a turned image is not
    the turned output (statistics over the whole image, such as instance norm), or has a fixed non-square input."""
    if not options.HasField("ensemble"):
        return 1
    try:
        passes = check_passes(options.ensemble)
    except ValueError as exc:
        raise status.invalid(str(exc)) from None
    if passes == 1:
        return 1
    why = refused
    if not why and not card.tile_safe:
        why = (f"model {card.name!r} is not tile-safe (its card says tile_safe: false: it takes statistics over the "
               "whole image, such as instance norm), so averaging its outputs for flipped and rotated copies is not "
               "a self-ensemble")
    image = card.input_by_role("image")
    size = fixed_size(image) if image is not None else None
    if not why and size is not None and size[0] != size[1]:
        why = f"model {card.name!r} takes a fixed {size[1]}x{size[0]} input, which a quarter turn does not fit"
    if why:
        raise status.precondition(f"ensemble={PASSES} refused: {why}; self-ensemble applies to tile-safe "
                                  "image-to-image models (Transform and its aliases); send ensemble 0")
    return passes


@dataclass
class ImageSettings:
    """Server-wide image API settings (one-to-one with the serve flags)."""

    max_pixels: int = 4096 * 4096
    max_output_pixels: int = 8192 * 8192  # largest output (width x height); 8192² is 192 MiB as 8-bit RGB
    tile_size: int = 128  # input pixels; 0 = no tiling
    tile_overlap: int = 16
    buckets: bool = False  # tile-safe models: pad each axis up to a bucket size (imaging.BUCKETS), crop the output back


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
    return _pixels_encoded(to_pixels(y, spec), fmt, quality)


def _pixels_encoded(pixels: np.ndarray, fmt: str, quality: int) -> tuple[tuple[int, int], bytes]:
    """8-bit pixels already converted (the tiled path makes them band by band) -> ((width, height), PNG/JPEG bytes)."""
    return (pixels.shape[1], pixels.shape[0]), encode_pixels(pixels, fmt, quality)


@dataclass
class ImageCall:
    """One image-to-image request, whichever RPC carried it (Transform or one of its aliases)."""

    model: str
    version: str
    image: bytes
    options: pb.ImageOptions
    conditions: Mapping[str, str] = field(default_factory=dict)
    mask: bytes = b""
    target_age: str | None = None  # AgeFace's one condition field: it fills the model's only condition input
    carries_conditions: bool = True  # False for SuperResolve / Translate / Derain, whose requests name none


@dataclass
class TransformPlan:
    """The tensors of a model one image-to-image request feeds and reads, chosen by the card's roles."""

    image: TensorSpec
    output: TensorSpec
    mask: TensorSpec | None
    conditions: list[tuple[TensorSpec, int]]  # each condition input with the index of its chosen choice


def transform_plan(card: ModelCard, call: ImageCall, rpc: str = "Transform") -> TransformPlan:
    """Check an image-to-image request against the card and say what feeds which input; INVALID_ARGUMENT when the
    model is not an image-to-image model or the request's mask or conditions do not fit it."""
    check_rpc(card, "Transform", rpc)
    image, output, mask = card.input_by_role("image"), card.output_by_role("image"), card.input_by_role("mask")
    assert image is not None and output is not None  # check_rpc saw both
    if call.mask and mask is None:
        raise status.invalid(f"model {card.name!r} has no mask input (inputs {roles_text(card.inputs)}); send no mask")
    if mask is not None and not call.mask:
        raise status.invalid(f"model {card.name!r} needs a mask image for its input {mask.name!r}, the image's size "
                             "(TransformRequest.mask)")
    given, what = call.conditions, "condition"
    if call.target_age is not None:
        given, what = single_condition(card, call.target_age, "target_age"), "target age"
    elif not call.carries_conditions:
        missing = [spec.name for spec in card.conditions() if spec.default is None]
        if missing:
            raise status.invalid(f"model {card.name!r} needs conditions ({', '.join(missing)}) that {rpc} cannot "
                                 "carry; call Transform with conditions")
    chosen = resolve_conditions(card, given, what)
    check_filled(card, [image.name, *([mask.name] if mask is not None else []), *chosen])
    specs = {spec.name: spec for spec in card.conditions()}
    return TransformPlan(image, output, mask, [(specs[name], index) for name, index in chosen.items()])


def _with_mask(x: np.ndarray, m: np.ndarray, model: str) -> np.ndarray:
    """The image and its mask stacked on the channel axis, so padding and tiling cut both alike."""
    if x.shape[2:] != m.shape[2:]:
        raise status.invalid(f"model {model!r}: the mask is {m.shape[3]}x{m.shape[2]} but the image is "
                             f"{x.shape[3]}x{x.shape[2]}; send both at one size")
    return np.concatenate([x, m], axis=1)


def describe(info: pb.ModelInfo, card: ModelCard) -> None:
    """Fill a ListModels entry from a card: facts, the RPC that serves it, its tensors and its conditions."""
    info.task, info.architecture, info.precision = card.task, card.architecture, card.precision
    info.scale, info.spatial_multiple, info.tile_safe = card.scale, card.spatial_multiple, card.tile_safe
    info.rpc = rpc_for(card)
    probs = card.output_by_role("probabilities", "logits")
    info.labels.extend((probs.labels or []) if probs else [])
    conditions = card.conditions()
    info.condition_labels.extend((conditions[0].labels or []) if conditions else [])
    for spec in conditions:
        info.conditions.add(name=spec.name, choices=condition_choices(spec), default=spec.default or "",
                            required=spec.default is None)
    for tensors, specs in ((info.inputs, card.inputs), (info.outputs, card.outputs)):
        for spec in specs:
            tensors.add(name=spec.name, role=spec.role, datatype=spec.dtype, shape=spec.shape)


class _Run:
    """Counts the network calls of one request and sends each through the model's batcher."""

    def __init__(self, version: ServedVersion, deadline: float | None) -> None:
        self.version, self.deadline, self.calls = version, deadline, 0

    async def __call__(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        return await self.version.batcher.submit(feeds, self.deadline)


class ImagesServicer(pb_grpc.ImagesServicer):
    """One code path per kind of model (image to image, classifier, generator); its card's roles say which."""

    def __init__(self, models: ModelManager, gate: CallGate, settings: ImageSettings) -> None:
        self.models, self.gate, self.settings = models, gate, settings

    # -- helpers -----------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _model(self, name: str, version: str) -> AsyncIterator[tuple[ServedModel, ServedVersion, ModelCard]]:
        """The ready model, version and card a request names, leased for the whole request (so a version being
        replaced stays loaded until it is done); a model without a card needs ModelInfer."""
        async with self.models.lease(name, version) as (model, served):
            card = model.card
            if card is None:
                raise status.precondition(f"model {name!r} has no model card; call it through ModelInfer")
            yield model, served, card

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
        multiple = max(1, card.spatial_multiple)
        if tile and multiple > 1:  # tiles start on the model's grid: the size rounds down, the overlap up
            tile_m, overlap_m = on_grid(tile, overlap, multiple)
            if tile_m == 0 or overlap_m >= tile_m:
                raise status.invalid(
                    f"{card.name} works on multiples of {multiple} pixels, so tile_size {tile} rounds down to "
                    f"{tile_m} and tile_overlap {overlap} up to {overlap_m}: the tile must be at least {multiple} "
                    f"and the overlap less than half of it (e.g. tile_size {max(4 * multiple, tile_m)}, tile_overlap "
                    f"{multiple})")
        return tile, overlap

    def _timing(self, model: str, t0: float, t_decoded: float, t_inferred: float, t_end: float) -> pb.Timing:
        """The reply's stage times, also observed in ganserve_stage_seconds (the same for both protocols)."""
        self.gate.metrics.observe_stages(model, t_decoded - t0, t_inferred - t_decoded, t_end - t_inferred)
        return pb.Timing(decode_ms=(t_decoded - t0) * 1e3, infer_ms=(t_inferred - t_decoded) * 1e3,
                         encode_ms=(t_end - t_inferred) * 1e3, total_ms=(t_end - t0) * 1e3)

    async def _decode(self, data: bytes, spec: TensorSpec) -> np.ndarray:
        return await asyncio.to_thread(_decoded_tensor, data, spec, self.settings.max_pixels)

    async def _reply(self, y: np.ndarray, spec: TensorSpec, options: pb.ImageOptions, served: ServedVersion,
                     name: str, runs: int, t0: float, t_decoded: float, t_inferred: float) -> pb.ImageResponse:
        fmt = "JPEG" if options.output_format == pb.JPEG else "PNG"
        if y.dtype == np.uint8:  # pixels from the tiled path; tensors (always float32) are converted here
            (width, height), data = await asyncio.to_thread(_pixels_encoded, y, fmt, options.jpeg_quality)
        else:
            (width, height), data = await asyncio.to_thread(_to_encoded, y, spec, fmt, options.jpeg_quality)
        t_end = time.perf_counter()
        timing = self._timing(name, t0, t_decoded, t_inferred, t_end)
        return pb.ImageResponse(image=data, format=pb.JPEG if fmt == "JPEG" else pb.PNG, width=width,
                                height=height, timing=timing, model=name, model_version=str(served.version),
                                tiles=runs)

    async def transform(self, rpc: str, call: ImageCall, deadline: float | None) -> pb.ImageResponse:
        """The one image-to-image path: decode, pad, tile through the batcher, crop, encode (Transform, its aliases
        and the HTTP image endpoint); raises ServingError."""
        t0 = time.perf_counter()
        async with self._model(call.model, call.version) as (model, served, card):
            plan = transform_plan(card, call, rpc)
            passes = ensemble_passes(card, call.options)
            x = await self._decode(call.image, plan.image)
            channels = x.shape[1]
            if plan.mask is not None:
                x = _with_mask(x, await self._decode(call.mask, plan.mask), model.name)
            t_decoded = time.perf_counter()
            height, width = x.shape[2], x.shape[3]
            tile, overlap = self._tiling(card, call.options)
            cost, tile, overlap = self._memory_plan(card, served, x.shape, plan.output, tile, overlap, passes)
            run = _Run(served, deadline)

            async def infer(part: np.ndarray) -> np.ndarray:
                feeds = {plan.image.name: to_layout(part if plan.mask is None else part[:, :channels], plan.image)}
                if plan.mask is not None:
                    feeds[plan.mask.name] = to_layout(part[:, channels:], plan.mask)
                for spec, index in plan.conditions:
                    feeds[spec.name] = condition_tensor(spec, index, part.shape[2], part.shape[3])
                return from_layout((await run(feeds))[plan.output.name], plan.output)

            async with self.gate.memory(cost, deadline, f"this {width}x{height} image on {model.name!r}"):
                return await self._run_transform(x, infer, card, tile, overlap, plan, served, model.name, run,
                                                 call.options, t0, t_decoded, passes)

    async def _run_transform(self, x: np.ndarray, infer, card: ModelCard, tile: int, overlap: int,
                             plan: TransformPlan, served: ServedVersion, name: str, run: "_Run",
                             options: pb.ImageOptions, t0: float, t_decoded: float,
                             passes: int = 1) -> pb.ImageResponse:
        """Tile (or not) through the batcher, blend, crop and encode one admitted image request; with ``passes``
        8, once per flip and rotation of the image, the outputs turned back and averaged in float."""
        height, width = x.shape[2], x.shape[3]
        multiple = max(1, card.spatial_multiple)
        start = time.perf_counter_ns()

        async def one_pass(turned: np.ndarray) -> np.ndarray:
            # each turned image is padded on its own (a quarter turn swaps H and W), and its whole output is held
            # in float: self_ensemble crops the padding off before turning the output back
            return await run_tiled(self._padded(turned, card, tile), infer, card.scale, tile, overlap, multiple)

        try:
            padded = None if passes > 1 else self._padded(x, card, tile)
            if padded is None:  # the sum of the turned-back outputs is added up in a worker thread, off the loop
                y = await self_ensemble(x, one_pass, card.scale, passes, offload=asyncio.to_thread)
            elif fits_one_tile(padded.shape[2], padded.shape[3], tile):
                y = await run_tiled(padded, infer, card.scale, tile, overlap, multiple)
            else:  # blended band by band straight to 8-bit rows, so only one band of the output is in float
                y = await run_tiled_rows(padded, infer, card.scale, tile, overlap, multiple,
                                         lambda block: to_pixels(block[..., : width * card.scale], plan.output))
        except BaseException:  # also a deadline or cancel that ends the call while queued
            served.stats.record(False, time.perf_counter_ns() - start)
            raise
        served.stats.record(True, time.perf_counter_ns() - start)
        out_h, out_w = height * card.scale, width * card.scale
        y = y[:out_h] if y.dtype == np.uint8 else y[:, :, :out_h, :out_w]  # pixels: columns cropped already
        return await self._reply(y, plan.output, options, served, name, run.calls, t0, t_decoded,
                                 time.perf_counter())

    def _padded(self, x: np.ndarray, card: ModelCard, tile: int) -> np.ndarray:
        """The image padded to the model's multiple, or for a tile-safe model to bucket sizes per axis (an axis that
        tiles cut only to the multiple), so runs see a few input shapes, not one per picture size."""
        multiple = max(1, card.spatial_multiple)
        if not (self.settings.buckets and card.tile_safe):
            return pad_to_multiple(x, multiple)
        return pad_to_bucket(x, multiple, on_grid(tile, 0, multiple)[0] if tile > 0 else 0)

    def _memory_plan(self, card: ModelCard, served: ServedVersion, shape: tuple[int, ...], output: TensorSpec,
                     tile: int, overlap: int, passes: int = 1) -> tuple[int, int, int]:
        """(memory cost, tile, overlap) of one image request, before it runs: past --max-output-pixels it is
        refused; a tile-safe model is tiled whenever the untiled plan would not fit the budget, whatever the
        client asked; a plan that can never fit is refused naming the budget and the largest input that fits.

        A self-ensemble (``passes`` > 1) runs one pass at a time but holds, besides the input, its turned and its
        padded copy, the float sum of the outputs and one pass's whole float output (its passes are not blended
        band by band into 8 bits: a quarter turn makes the bands columns), and at the end the sum's 8-bit copy."""
        channels_in, height, width = shape[1], shape[2], shape[3]
        scale, multiple = max(1, card.scale), max(1, card.spatial_multiple)
        channels_out = output.shape[0] if output.shape and output.shape[0] > 0 else 3
        out_pixels = height * width * scale * scale
        if out_pixels > self.settings.max_output_pixels:
            side = math.isqrt(self.settings.max_output_pixels) // scale
            raise self.gate.refuse_memory("output_pixels", f"the output would be {width * scale}x{height * scale} = "
                                          f"{out_pixels:,} pixels, over the server's --max-output-pixels "
                                          f"{self.settings.max_output_pixels:,}; at x{scale} the largest square "
                                          f"input is {side}x{side}")
        limit = self.gate.budget.limit
        padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
        if self.settings.buckets and card.tile_safe:  # the shape the network will see (its bucket)
            padded_h, padded_w = bucketed_shape(height, width, multiple, on_grid(tile, 0, multiple)[0] if tile > 0 else 0)

        ensemble = int(passes > 1)  # 1 for a self-ensemble: two more copies of the input, the outputs' float sum

        def untiled(side_h: int, side_w: int) -> int:  # input, float output, 8-bit result, one run's working memory
            return ((4 + 8 * ensemble) * channels_in * side_h * side_w
                    + (5 + 4 * ensemble) * channels_out * side_h * side_w * scale * scale
                    + served.cost.working(side_h * side_w))

        def tiled(t: int, o: int, side_h: int = padded_h, side_w: int = padded_w) -> int:
            rows = max(1, served.batcher.config.max_batch_size)
            tile_px = t * t
            if ensemble:  # one pass's whole float output, the float sum and the result's 8 bits
                outputs = 9 * channels_out * side_h * side_w * scale * scale
            else:
                outputs = (channels_out * out_pixels
                           + banded_window_bytes(side_h, side_w, channels_out, scale, t, o, multiple))
            return ((4 + 8 * ensemble) * channels_in * side_h * side_w + outputs
                    + 16 * 4 * (channels_in + channels_out * scale * scale) * tile_px
                    + served.cost.working(tile_px, rows))

        if fits_one_tile(padded_h, padded_w, tile):
            cost = untiled(padded_h, padded_w)
            if cost <= limit or not card.tile_safe:
                if cost > limit:
                    side = served.cost.largest_side(limit, lambda s: untiled(s, s) - served.cost.working(s * s))
                    raise self.gate.refuse_memory("over_budget", f"a {width}x{height} image on {card.name!r} needs "
                                                  f"about {mib(cost)} of memory, more than the server's budget of "
                                                  f"{mib(limit)} (--max-memory-mib), and this model cannot be tiled "
                                                  f"(its card says tile_safe: false); largest input that fits: about "
                                                  f"{side}x{side}")
                return cost, tile, overlap
            tile = self.settings.tile_size or ImageSettings.tile_size  # too big untiled: tiled, whatever was asked
            overlap = self.settings.tile_overlap if self.settings.tile_size else ImageSettings.tile_overlap
            tile, overlap = card_tiling(card).get("size", tile), card_tiling(card).get("overlap", overlap)
        cost = tiled(tile, overlap)
        if cost > limit and ensemble:
            side = served.cost.largest_side(limit, lambda s: tiled(tile, overlap, s, s) - served.cost.working(s * s))
            raise self.gate.refuse_memory("over_budget", f"with ensemble {passes} a {width}x{height} image on "
                                          f"{card.name!r} needs about {mib(cost)} of memory (the whole "
                                          f"{width * scale}x{height * scale} result is held in float twice: one "
                                          "pass's and the running sum), more than the server's budget of "
                                          f"{mib(limit)} (--max-memory-mib); largest input with ensemble: about "
                                          f"{side}x{side}; without ensemble this image is blended band by band")
        if cost > limit:
            raise self.gate.refuse_memory("over_budget", f"a {width}x{height} image on {card.name!r} needs about "
                                          f"{mib(cost)} of memory even in tiles of {tile} pixels (its "
                                          f"{width * scale}x{height * scale} result alone is "
                                          f"{mib(channels_out * out_pixels)}), more than the server's budget of "
                                          f"{mib(limit)} (--max-memory-mib)")
        return cost, tile, overlap

    async def _transform(self, rpc: str, call: ImageCall, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        deadline = self.gate.deadline(context)
        return await self.gate.run(context, rpc, call.model, lambda: self.transform(rpc, call, deadline))

    @staticmethod
    def _alias(request: pb.ImageRequest) -> ImageCall:
        """An ImageRequest (SuperResolve / Translate / Derain) as a Transform call without conditions."""
        return ImageCall(request.model, request.model_version, request.image, request.options, carries_conditions=False)

    # -- RPCs --------------------------------------------------------------------------------------------
    async def Transform(self, request: pb.TransformRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        call = ImageCall(request.model, request.model_version, request.image, request.options,
                         dict(request.conditions), request.mask)
        return await self._transform("Transform", call, context)

    async def SuperResolve(self, request: pb.ImageRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._transform("SuperResolve", self._alias(request), context)

    async def Translate(self, request: pb.ImageRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._transform("Translate", self._alias(request), context)

    async def Derain(self, request: pb.ImageRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        return await self._transform("Derain", self._alias(request), context)

    async def AgeFace(self, request: pb.AgeFaceRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        call = ImageCall(request.model, request.model_version, request.image, request.options,
                         target_age=request.target_age)
        return await self._transform("AgeFace", call, context)

    async def classify(self, request: pb.ClassifyRequest, deadline: float | None) -> pb.ClassifyResponse:
        """Class probabilities for one image (softmax of a logits output); raises ServingError."""
        t0 = time.perf_counter()
        async with self._model(request.model, request.model_version) as (model, served, card):
            check_rpc(card, "Classify")
            image_spec = card.input_by_role("image")
            out_spec = card.output_by_role("probabilities", "logits")
            assert image_spec is not None and out_spec is not None  # check_rpc saw both
            check_filled(card, [image_spec.name])
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
            response.timing.CopyFrom(self._timing(model.name, t0, t_decoded, t_inferred, t_end))
            return response

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        deadline = self.gate.deadline(context)
        return await self.gate.run(context, "Classify", request.model, lambda: self.classify(request, deadline))

    @staticmethod
    def _generate_conditions(card: ModelCard, request: pb.GenerateRequest) -> dict[str, int]:
        """Generate's conditions map, with its older single condition field filling the model's only condition."""
        given = dict(request.conditions)
        for name, value in single_condition(card, request.condition, "condition").items():
            if given.get(name, value).strip().lower() != value.strip().lower():
                raise status.invalid(f"model {card.name!r}: condition {value!r} and conditions[{name!r}] = "
                                     f"{given[name]!r} disagree; send one")
            given[name] = value
        return resolve_conditions(card, given)

    async def generate(self, request: pb.GenerateRequest, deadline: float | None) -> pb.ImageResponse:
        """One sample of a generative model from its seed (and conditions); raises ServingError."""
        t0 = time.perf_counter()
        async with self._model(request.model, request.model_version) as (model, served, card):
            check_rpc(card, "Generate")
            ensemble_passes(card, request.options, f"model {card.name!r} is served by Generate, which has no input "
                                                   "image to flip or rotate")
            latent, out_spec = card.input_by_role("latent"), card.output_by_role("image")
            assert latent is not None and out_spec is not None  # check_rpc saw both
            chosen = self._generate_conditions(card, request)
            check_filled(card, [latent.name, *chosen])
            feeds = {latent.name: latent_tensor(latent, request.seed)}
            for spec in card.conditions():
                feeds[spec.name] = condition_tensor(spec, chosen[spec.name], 1, 1)
            t_decoded = time.perf_counter()
            y = from_layout((await _Run(served, deadline)(feeds))[out_spec.name], out_spec)
            return await self._reply(y, out_spec, request.options, served, model.name, 1, t0, t_decoded,
                                     time.perf_counter())

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> pb.ImageResponse:
        deadline = self.gate.deadline(context)
        return await self.gate.run(context, "Generate", request.model, lambda: self.generate(request, deadline))

    def list_models(self) -> pb.ListModelsResponse:
        """Every model the server knows of: state, the RPC that serves it, its tensors and conditions."""
        response = pb.ListModelsResponse()
        for name in sorted(self.models.models):
            model = self.models.models[name]
            info = response.models.add(name=name, state=model.state, reason=model.reason)
            if model.versions:
                latest = model.latest()
                info.version, info.provider = str(latest.version), latest.runner.provider
            if model.card is not None:
                describe(info, model.card)
            if model.versions:
                info.precision = model.latest().runner.precision  # what serves, which may differ from the export
        return response

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        return self.list_models()
