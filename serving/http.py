"""The HTTP front of the server: KServe v2 REST, the image API over plain HTTP, the page at `/`, and /metrics.

aiohttp runs in the same asyncio event loop as grpc.aio (chosen by measurement: docs/http.md), so both protocols
share one model manager, one batcher per model and one metrics registry. Bodies are limited before they are read
(Content-Length first, then while streaming); errors are ``{"error": "..."}`` with the HTTP status of the same error
class gRPC answers with; bearer tokens and TLS as in serving/security.py.
"""

from __future__ import annotations

import logging
import re
import ssl
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ganserve.serving import status
from ganserve.serving.calls import CallGate
from ganserve.serving.http_images import ImagesHttp
from ganserve.serving.images import ImagesServicer
from ganserve.serving.limits import Limits
from ganserve.serving.oip import InferenceServicer
from ganserve.serving.rest import KServeRest
from ganserve.serving.security import Tokens, refusal

log = logging.getLogger("ganserve.serving")

# Paths open without a token: health and readiness for probes, and the page's own files (it asks for a token).
_OPEN = re.compile(r"^/(v2/health/(live|ready)|v2/models/[^/]+(/versions/[^/]+)?/ready|static/[\w.-]+|favicon\.ico)?$")


class HttpFront:
    """One aiohttp application on its own port, over the servicers the gRPC server uses."""

    def __init__(self, oip: InferenceServicer, images: ImagesServicer, gate: CallGate, max_body_bytes: int,
                 tokens: Tokens | None = None, limits: Limits | None = None) -> None:
        self.gate, self.max_body_bytes, self.tokens = gate, max_body_bytes, tokens
        self.limits = limits or Limits()
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[self._errors, self._auth])
        self.app.add_routes(KServeRest(oip, self).routes())
        self.app.add_routes(ImagesHttp(images, self).routes())
        self.app.add_routes([web.get("/metrics", self._metrics)])
        self._runner: web.AppRunner | None = None
        self.port = -1

    # -- what the route modules share -----------------------------------------------------------------------
    def error(self, err: status.ServingError) -> web.Response:
        return web.json_response({"error": err.message}, status=err.http_status)

    def _declared(self, request: web.Request) -> None:
        declared = request.content_length
        if declared is not None and declared > self.max_body_bytes:
            raise status.too_large(f"request body of {declared} bytes is over the server's limit of "
                                   f"{self.max_body_bytes} (--max-message-mb)")

    def _grew(self, exc: Exception) -> status.ServingError:
        return status.too_large(f"request body is over the server's limit of {self.max_body_bytes} bytes "
                                "(--max-message-mb)")

    async def body(self, request: web.Request) -> bytes:
        """The request body, refused with 413 before it is read when its declared length is over the limit (and
        while it streams in, when it declares none)."""
        self._declared(request)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise self._grew(exc) from exc

    async def form(self, request: web.Request):
        """A multipart form's fields, with the same limits as `body`."""
        self._declared(request)
        try:
            return await request.post()
        except web.HTTPRequestEntityTooLarge as exc:
            raise self._grew(exc) from exc
        except ValueError as exc:
            raise status.invalid(f"the multipart form does not parse: {exc}") from exc
        except HttpProcessingError as exc:  # a part's headers do not parse (a form cut short inside them)
            raise status.invalid(f"the multipart form does not parse: {exc.message.strip()}") from exc

    # -- middlewares -----------------------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Every failure as {"error": ...}: ServingErrors with their status, aiohttp's own (404 route, 405) too."""
        try:
            return await handler(request)
        except status.ServingError as err:
            return self.error(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"error": exc.reason if exc.text is None or exc.text.startswith(str(exc.status))
                                      else exc.text}, status=exc.status, headers=_kept_headers(exc))
        except Exception as exc:  # noqa: BLE001  (answered 500 with the reason; logged in full)
            log.exception("HTTP %s %s failed", request.method, request.path)
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        if self.tokens is None or _OPEN.match(request.path):
            return await handler(request)
        authorization = request.headers.get("Authorization")
        if not self.tokens.accepts(authorization):
            self.gate.metrics.observe_request("-", f"HTTP {request.method}", "UNAUTHENTICATED", 0.0, "http")
            return web.json_response({"error": refusal(authorization)}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="ganserve"'})
        return await handler(request)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.gate.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None, grace_seconds: float) -> int:
        """Bind and serve; port 0 picks a free one. Returns the bound port."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=grace_seconds)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop listening, let every accepted request finish (up to the grace period), close connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    """Headers of aiohttp's own error answers worth keeping (Allow on a 405)."""
    return {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
