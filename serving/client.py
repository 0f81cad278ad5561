"""Python client of the ganserve.v1.Images API (what `ganserve client` uses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import grpc

from ganserve.serving.proto.ganserve.v1 import images_pb2 as pb
from ganserve.serving.proto.ganserve.v1 import images_pb2_grpc as pb_grpc

DEFAULT_SERVER = "127.0.0.1:8001"


@dataclass
class ImageOptions:
    """Per-request image options; None leaves the choice to the model card / server."""

    output_format: str = "PNG"  # PNG | JPEG
    jpeg_quality: int = 0
    tile_size: int | None = None
    tile_overlap: int | None = None
    ensemble: int | None = None  # 8 = average the 8 flips and rotations (tile-safe image models); 0 or 1 = one pass

    def to_proto(self) -> pb.ImageOptions:
        fmt = self.output_format.upper()
        if fmt not in ("PNG", "JPEG", "JPG"):
            raise ValueError(f"output format must be PNG or JPEG, got {self.output_format!r}")
        options = pb.ImageOptions(output_format=pb.JPEG if fmt in ("JPEG", "JPG") else pb.PNG,
                                  jpeg_quality=self.jpeg_quality)
        if self.tile_size is not None:
            options.tile_size = self.tile_size
        if self.tile_overlap is not None:
            options.tile_overlap = self.tile_overlap
        if self.ensemble is not None:
            options.ensemble = self.ensemble
        return options


class _Calls:
    """The Images stub with the timeout and the bearer token on every call."""

    def __init__(self, stub: pb_grpc.ImagesStub, timeout: float | None, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub, self._timeout, self._metadata = stub, timeout, metadata

    def __getattr__(self, rpc: str):
        method = getattr(self._stub, rpc)
        return lambda request, timeout=None: method(request, timeout=timeout or self._timeout,
                                                    metadata=self._metadata or None)


class ImagesClient:
    """Blocking client; one channel per instance (use as a context manager).

    ``root_certificates`` (PEM bytes) makes the channel TLS; ``client_cert``/``client_key`` add a client certificate
    for mutual TLS; ``token`` goes with every call as ``authorization: Bearer <token>``.
    """

    def __init__(self, server: str = DEFAULT_SERVER, max_message_mb: int = 64, timeout: float | None = 120.0,
                 root_certificates: bytes | None = None, client_cert: bytes | None = None,
                 client_key: bytes | None = None, token: str | None = None) -> None:
        limit = max_message_mb * 1024 * 1024
        options = [("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)]
        if root_certificates is not None or client_cert is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates, client_key, client_cert)
            self.channel = grpc.secure_channel(server, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(server, options=options)
        self.stub = _Calls(pb_grpc.ImagesStub(self.channel), timeout,
                           (("authorization", f"Bearer {token}"),) if token else ())
        self.timeout = timeout

    def _image_call(self, rpc: str, model: str, image: bytes, options: ImageOptions | None, version: str) -> pb.ImageResponse:
        request = pb.ImageRequest(model=model, image=image, options=(options or ImageOptions()).to_proto(),
                                  model_version=version)
        return getattr(self.stub, rpc)(request)

    def transform(self, model: str, image: bytes, conditions: Mapping[str, str] | None = None,
                  mask: bytes | None = None, options: ImageOptions | None = None, version: str = "") -> pb.ImageResponse:
        """Any image-to-image model: the image (and its mask) in, the picture out; ``conditions`` maps each
        condition input's name to a choice (see list_models)."""
        request = pb.TransformRequest(model=model, image=image, conditions=dict(conditions or {}), mask=mask or b"",
                                      options=(options or ImageOptions()).to_proto(), model_version=version)
        return self.stub.Transform(request)

    def super_resolve(self, model: str, image: bytes, options: ImageOptions | None = None, version: str = "") -> pb.ImageResponse:
        return self._image_call("SuperResolve", model, image, options, version)

    def translate(self, model: str, image: bytes, options: ImageOptions | None = None, version: str = "") -> pb.ImageResponse:
        return self._image_call("Translate", model, image, options, version)

    def derain(self, model: str, image: bytes, options: ImageOptions | None = None, version: str = "") -> pb.ImageResponse:
        return self._image_call("Derain", model, image, options, version)

    def age_face(self, model: str, image: bytes, target_age: str, options: ImageOptions | None = None,
                 version: str = "") -> pb.ImageResponse:
        request = pb.AgeFaceRequest(model=model, image=image, target_age=target_age,
                                    options=(options or ImageOptions()).to_proto(), model_version=version)
        return self.stub.AgeFace(request)

    def classify(self, model: str, image: bytes, top_k: int = 5, version: str = "") -> pb.ClassifyResponse:
        request = pb.ClassifyRequest(model=model, image=image, top_k=top_k, model_version=version)
        return self.stub.Classify(request)

    def generate(self, model: str, seed: int = 0, condition: str = "", options: ImageOptions | None = None,
                 version: str = "", conditions: Mapping[str, str] | None = None) -> pb.ImageResponse:
        request = pb.GenerateRequest(model=model, seed=seed, condition=condition, conditions=dict(conditions or {}),
                                     options=(options or ImageOptions()).to_proto(), model_version=version)
        return self.stub.Generate(request)

    def list_models(self) -> pb.ListModelsResponse:
        return self.stub.ListModels(pb.ListModelsRequest())

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "ImagesClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
