"""The image API over plain HTTP, and the page at `/` that tries every model.

One endpoint per kind of answer, chosen by the model card's roles exactly as the gRPC image API chooses its RPC:

    POST /v1/models/{model}[/versions/{v}]/transform   image body (or multipart: image, mask) -> image
    POST /v1/models/{model}[/versions/{v}]/classify    image body -> JSON class scores
    GET|POST /v1/models/{model}[/versions/{v}]/generate ?seed=N -> image
    GET  /v1/models                                    every model: card facts, tensors, conditions, choice table
    GET  /v1/models/{model}/example[?input=mask]       a built-in example input (from the reference set), as PNG

Options and conditions are query parameters (or text fields of a multipart form): ``format`` (png|jpeg),
``quality``, ``tile_size``, ``tile_overlap``, ``ensemble`` (8 = average the 8 flips and rotations of the image; 0 or
1 = one pass), ``top_k``, ``seed``, ``timeout_ms``; every other name is a condition of the model (``?age=60%2B``),
``condition.NAME=CHOICE`` too. Image replies carry their stage times in the standard ``Server-Timing`` header and
the model, version and network runs in ``X-Ganserve-*`` headers.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any, Mapping

import numpy as np
from aiohttp import web

from ganserve.serving import status
from ganserve.serving.imaging import encode_pixels, from_layout, to_pixels
from ganserve.serving.image_api import ImageCall, ImagesServicer
from ganserve.serving.candidates import load_reference_cases
from ganserve.serving.proto.ganserve.v1 import images_pb2 as pb
from ganserve.serving.rest import proto_dict

# The options each endpoint takes; every other parameter of transform and generate is a condition.
OPTIONS = {"transform": ("format", "quality", "tile_size", "tile_overlap", "ensemble", "timeout_ms"),
           "classify": ("top_k", "timeout_ms"),
           "generate": ("seed", "condition", "format", "quality", "ensemble", "timeout_ms")}
PAGE_FILES = {"index.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}


def _int(params: Mapping[str, str], name: str, low: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise status.invalid(f"parameter {name}={value!r} must be an integer") from None
    if low is not None and number < low:
        raise status.invalid(f"parameter {name}={number} must be >= {low}")
    return number


def image_options(params: Mapping[str, str]) -> pb.ImageOptions:
    """format / quality / tile_size / tile_overlap / ensemble as the gRPC API's ImageOptions (the image API checks
    the ensemble value, so both protocols refuse a bad one with the same message)."""
    options = pb.ImageOptions()
    fmt = params.get("format", "png").strip().lower()
    if fmt not in ("png", "jpeg", "jpg"):
        raise status.invalid(f"parameter format={fmt!r} must be png or jpeg")
    options.output_format = pb.JPEG if fmt in ("jpeg", "jpg") else pb.PNG
    quality = _int(params, "quality", 0)
    if quality is not None:
        if quality > 100:
            raise status.invalid(f"parameter quality={quality} must be 1..100")
        options.jpeg_quality = quality
    for name in ("tile_size", "tile_overlap"):
        value = _int(params, name, 0)
        if value is not None:
            setattr(options, name, value)
    ensemble = _int(params, "ensemble")
    if ensemble is not None:
        options.ensemble = ensemble
    return options


def conditions_of(params: Mapping[str, str], endpoint: str) -> dict[str, str]:
    """Every parameter that is not one of the endpoint's options, as a condition (``condition.NAME`` names one
    explicitly, for a condition whose name is also an option's)."""
    found: dict[str, str] = {}
    for key, value in params.items():
        if key in OPTIONS[endpoint]:
            continue
        name = key.removeprefix("condition.")
        if not name:
            raise status.invalid(f"parameter {key!r} names no condition (write condition.NAME=CHOICE)")
        if name in found:
            raise status.invalid(f"condition {name!r} given twice")
        found[name] = value
    return found


def _deadline(params: Mapping[str, str]) -> float | None:
    timeout = _int(params, "timeout_ms", 1)
    return None if timeout is None else time.monotonic() + timeout / 1e3


def image_reply(reply: pb.ImageResponse) -> web.Response:
    """An ImageResponse as the image itself, its facts in headers."""
    t = reply.timing
    headers = {
        "Server-Timing": f"decode;dur={t.decode_ms:.3f}, infer;dur={t.infer_ms:.3f}, encode;dur={t.encode_ms:.3f}, "
                         f"total;dur={t.total_ms:.3f}",
        "X-Ganserve-Model": reply.model, "X-Ganserve-Model-Version": reply.model_version,
        "X-Ganserve-Runs": str(reply.tiles), "X-Ganserve-Width": str(reply.width),
        "X-Ganserve-Height": str(reply.height),
    }
    return web.Response(body=reply.image, content_type="image/jpeg" if reply.format == pb.JPEG else "image/png",
                        headers=headers)


class ImagesHttp:
    """The /v1 routes and the page, over the same ImagesServicer (and so the same code path) as gRPC."""

    def __init__(self, images: ImagesServicer, front: Any) -> None:
        self.images, self.front = images, front

    def routes(self) -> list[web.RouteDef]:
        r = [web.get("/", self.page), web.get("/static/{name}", self.static), web.get("/v1/models", self.listing),
             web.get("/v1/models/{model}/example", self.example)]
        for base in ("/v1/models/{model}", "/v1/models/{model}/versions/{version}"):
            r += [web.post(base + "/transform", self.transform), web.post(base + "/classify", self.classify),
                  web.post(base + "/generate", self.generate), web.get(base + "/generate", self.generate)]
        return r

    async def _request(self, request: web.Request, files: tuple[str, ...]) -> tuple[dict[str, str], dict[str, bytes]]:
        """Query parameters and image parts: a raw image body, or a multipart form with `files` and text fields."""
        params = {k: v for k, v in request.query.items()}
        if len(params) != len(request.query):
            raise status.invalid("a query parameter is given twice")
        parts: dict[str, bytes] = {}
        if request.content_type == "multipart/form-data":
            form = await self.front.form(request)
            for key, value in form.items():
                if key in files:
                    parts[key] = value.file.read() if hasattr(value, "file") else str(value).encode()
                elif hasattr(value, "file"):
                    raise status.invalid(f"form field {key!r} is a file; files go in {', '.join(files)}")
                elif key in params:
                    raise status.invalid(f"parameter {key!r} given both in the query and in the form")
                else:
                    params[key] = str(value)
        elif files:
            parts[files[0]] = await self.front.body(request)
        return params, parts

    async def _run(self, method: str, model: str, work) -> Any:
        result, err = await self.images.gate.outcome(method, model, work, protocol="http")
        if err is not None:
            raise err
        return result

    async def transform(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info.get("version", "")

        async def work() -> pb.ImageResponse:
            params, parts = await self._request(request, ("image", "mask"))
            call = ImageCall(model, version, parts.get("image", b""), image_options(params),
                             conditions_of(params, "transform"), parts.get("mask", b""))
            return await self.images.transform("Transform", call, _deadline(params))
        return image_reply(await self._run("Transform", model, work))

    async def classify(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info.get("version", "")

        async def work() -> pb.ClassifyResponse:
            params, parts = await self._request(request, ("image",))
            extra = [key for key in params if key not in OPTIONS["classify"]]
            if extra:
                raise status.invalid(f"classify takes no parameter {', '.join(map(repr, extra))} (it takes top_k, "
                                     "timeout_ms)")
            message = pb.ClassifyRequest(model=model, model_version=version, image=parts.get("image", b""),
                                         top_k=_int(params, "top_k", 0) or 0)
            return await self.images.classify(message, _deadline(params))
        return web.json_response(proto_dict(await self._run("Classify", model, work)))

    async def generate(self, request: web.Request) -> web.Response:
        model, version = request.match_info["model"], request.match_info.get("version", "")

        async def work() -> pb.ImageResponse:
            params, _ = await self._request(request, ())
            message = pb.GenerateRequest(model=model, model_version=version, seed=_int(params, "seed") or 0,
                                         condition=params.get("condition", ""), options=image_options(params))
            message.conditions.update(conditions_of(params, "generate"))
            return await self.images.generate(message, _deadline(params))
        return image_reply(await self._run("Generate", model, work))

    async def listing(self, request: web.Request) -> web.Response:
        """ListModels as JSON, with what the page shows besides: the card's held-out metrics and training budget,
        and each served version's provider/precision choice with its candidate table."""
        listed = self.images.list_models()
        models = []
        for info in listed.models:
            entry = proto_dict(info)
            served = self.images.models.models.get(info.name)
            card = served.card if served is not None else None
            if card is not None:
                entry["card"] = {"metrics": card.metrics, "parameters": card.parameters, "notes": card.notes,
                                 "ensemble": card.ensemble,
                                 "training": {k: card.training[k] for k in ("data", "steps", "minutes", "budget")
                                              if k in card.training}}
            if served is not None and served.versions:
                choice = served.latest().choice
                if choice is not None:
                    entry["choice"] = {"summary": choice.summary, "candidates": [t.as_dict() for t in choice.table]}
            entry["example"] = card is not None and self._reference(info.name) is not None
            models.append(entry)
        return web.json_response({"models": models}, dumps=lambda o: json.dumps(o, default=str))

    def _reference(self, name: str):
        served = self.images.models.models.get(name)
        if served is None or served.source is None or not served.versions:
            return None
        return served.source.reference_path(max(served.versions))

    async def example(self, request: web.Request) -> web.Response:
        """The first reference-set input of the model's role ``input`` (image or mask) as a PNG."""
        name, role = request.match_info["model"], request.query.get("input", "image")
        model, _ = self.images.models.get(name)
        spec = model.card.input_by_role(role) if model.card is not None else None
        path = self._reference(name)
        if spec is None or path is None:
            raise status.not_found(f"model {name!r} has no built-in example for an {role!r} input")

        def png() -> bytes:
            case = load_reference_cases(path)[0]
            return encode_pixels(to_pixels(np.asarray(from_layout(case.inputs[spec.name][:1], spec)), spec))
        return web.Response(body=await asyncio.to_thread(png), content_type="image/png")

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    @staticmethod
    def _file(name: str) -> web.Response:
        kind = PAGE_FILES.get(name)
        if kind is None:
            raise status.not_found(f"no page file {name!r}")
        data = resources.files("ganserve.serving").joinpath("web", name).read_bytes()
        return web.Response(body=data, content_type=kind, headers={"Cache-Control": "no-cache"})
