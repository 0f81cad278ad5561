"""The HTTP front of the server: KServe v2 REST, the image API over plain HTTP, the page at `/`, and /metrics.

aiohttp runs in the same asyncio event loop as grpc.aio (chosen by measurement: docs/http.md), so both protocols
share one model manager, one batcher per model and one metrics registry. Bodies are limited before they are read
(Content-Length first, then while streaming); errors are ``{"error": "..."}`` with the HTTP status of the same error
class gRPC answers with; bearer tokens and TLS as in serving/security.py.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ganserve.serving import status
from ganserve.serving.call_gate import CallGate
from ganserve.serving.http_images import ImagesHttp
from ganserve.serving.image_api import ImagesServicer
from ganserve.serving.limits import Limits
from ganserve.serving.oip import InferenceServicer
from ganserve.serving.rest import KServeRest
from ganserve.serving.security import Tokens, refusal

log = logging.getLogger("ganserve.serving")



class GuardedHandler(RequestHandler):
    """aiohttp's connection handler with the front door's limits: a request's head must arrive within
    --header-timeout of its first byte (aiohttp itself only times out a connection that stays idle), and each
    connection knows whether it came in past --max-connections."""

    def __init__(self, server: "GuardedServer", *args, front: "HttpFront", **kwargs) -> None:
        super().__init__(server, *args, **kwargs)
        self.server, self.front = server, front
        self.over_cap = False
        self._head_guard: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.open_connections += 1
        self.over_cap = self.server.open_connections > self.front.limits.max_connections

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.open_connections -= 1
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting_for_head = not self._messages and not self._request_in_progress
        if waiting_for_head and data and self._head_guard is None:
            self._head_guard = self._loop.call_later(self.front.limits.header_timeout_s, self._head_late)
        super().data_received(data)
        if self._messages or self._request_in_progress:  # a whole head has arrived (or a request runs)
            self._disarm()

    def _head_late(self) -> None:
        self._head_guard = None
        if not self._messages and not self._request_in_progress:
            log.info("HTTP: closed a connection whose request head took over %.0f s (--header-timeout)",
                     self.front.limits.header_timeout_s)
            self.force_close()

    def _disarm(self) -> None:
        if self._head_guard is not None:
            self._head_guard.cancel()
            self._head_guard = None


class GuardedServer(web.Server):
    """web.Server whose connections are GuardedHandlers of one front."""

    def __init__(self, *args, front: "HttpFront", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.front = front
        self.open_connections = 0  # this port's connections (the HTTP port and the metrics port count apart)

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, front=self.front, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """AppRunner that serves its application through a GuardedServer."""

    def __init__(self, app: web.Application, front: "HttpFront", **kwargs) -> None:
        super().__init__(app, **kwargs)
        self.front = front

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return GuardedServer(server.request_handler, request_factory=server.request_factory, loop=server._loop,
                             handler_cancellation=server.handler_cancellation, front=self.front, **server._kwargs)


class HttpFront:
    """One aiohttp application on its own port, over the servicers the gRPC server uses."""

    def __init__(self, oip: InferenceServicer, images: ImagesServicer, gate: CallGate, max_body_bytes: int,
                 tokens: Tokens | None = None, limits: Limits | None = None) -> None:
        self.gate, self.max_body_bytes, self.tokens = gate, max_body_bytes, tokens
        self.limits = limits or Limits()
        self.app = web.Application(client_max_size=max_body_bytes, middlewares=[self._errors, self._auth])
        rest, pages = KServeRest(oip, self), ImagesHttp(images, self)
        self.app.add_routes(rest.routes())
        self.app.add_routes(pages.routes())
        self.app.add_routes([web.get("/metrics", self._metrics)])
        # Authorization is decided on the route aiohttp matched (the handler that will run), never on the path's
        # text: health and readiness stay open for probes and balancers, the page and its files too (it asks for
        # a token); everything else, unmatched paths included, needs the token.
        self._health = {rest.live, rest.ready, rest.model_ready}
        self._open = self._health | {pages.page, pages.static}
        self._runner: web.AppRunner | None = None
        self._metrics_runner: web.AppRunner | None = None
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

    def _late(self) -> status.ServingError:
        return status.too_slow(f"the request body did not arrive within {self.limits.body_timeout_s:g} s "
                               "(--body-timeout)")

    async def body(self, request: web.Request) -> bytes:
        """The request body, refused with 413 before it is read when its declared length is over the limit (and
        while it streams in, when it declares none)."""
        self._declared(request)
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise self._grew(exc) from exc
        except TimeoutError as exc:
            raise self._late() from exc

    async def form(self, request: web.Request):
        """A multipart form's fields, with the same limits as `body`."""
        self._declared(request)
        try:
            async with asyncio.timeout(self.limits.body_timeout_s):
                return await request.post()
        except web.HTTPRequestEntityTooLarge as exc:
            raise self._grew(exc) from exc
        except TimeoutError as exc:
            raise self._late() from exc
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
            response = await handler(request)
        except status.ServingError as err:
            response = self.error(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"error": exc.reason if exc.text is None or exc.text.startswith(str(exc.status))
                                      else exc.text}, status=exc.status, headers=_kept_headers(exc))
        except Exception as exc:  # noqa: BLE001  (answered 500 with the reason; logged in full)
            log.exception("HTTP %s %s failed", request.method, request.path)
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=500)
        if response.status == 408 and not response.prepared:
            # a client too slow with its body: answer, then drop the connection at once (aiohttp would otherwise
            # keep reading the rest of the body for its lingering time)
            await response.prepare(request)
            await response.write_eof()
            request.protocol.force_close()
        return response

    @web.middleware
    async def _auth(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
        route = request.match_info.route.handler if request.match_info.http_exception is None else None
        protocol = request.protocol
        if getattr(protocol, "over_cap", False):  # past --max-connections: probes only, then the connection closes
            if route in self._health:
                response = await handler(request)
            else:
                response = web.json_response({"error": "the server holds its maximum of "
                                              f"{self.limits.max_connections} HTTP connections (--max-connections); "
                                              "retry later"}, status=503, headers={"Retry-After": "1"})
            response.force_close()
            return response
        if self.tokens is None or route in self._open:
            return await handler(request)
        return self._refuse_unauthorized(request) or await handler(request)

    def _refuse_unauthorized(self, request: web.Request) -> web.Response | None:
        """401 for a request without an accepted token (counted under no model), else None."""
        authorization = request.headers.get("Authorization")
        if self.tokens is None or self.tokens.accepts(authorization):
            return None
        self.gate.metrics.observe_request("-", "HTTP", "UNAUTHENTICATED", 0.0, "http")
        return web.json_response({"error": refusal(authorization)}, status=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="ganserve"'})

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.gate.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def _metrics_only(self, request: web.Request) -> web.Response:
        """/metrics on the metrics port: the same token as the rest of the server when it has one."""
        return self._refuse_unauthorized(request) or await self._metrics(request)

    async def _serve(self, app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None,
                     grace_seconds: float) -> tuple[web.AppRunner, int]:
        runner = GuardedRunner(app, self, access_log=None, shutdown_timeout=grace_seconds,
                               keepalive_timeout=self.limits.idle_timeout_s)
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
        return runner, int(runner.addresses[0][1])

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None, grace_seconds: float) -> int:
        """Bind and serve; port 0 picks a free one. Returns the bound port."""
        self._runner, self.port = await self._serve(self.app, host, port, ssl_context, grace_seconds)
        return self.port

    async def start_metrics(self, host: str, port: int, ssl_context: ssl.SSLContext | None) -> int:
        """Serve /metrics alone on its own port (Prometheus), behind the token and TLS of the rest; returns the port."""
        app = web.Application(middlewares=[self._errors])
        app.add_routes([web.get("/metrics", self._metrics_only)])
        self._metrics_runner, bound = await self._serve(app, host, port, ssl_context, 1.0)
        return bound

    async def stop(self) -> None:
        """Stop listening, let every accepted request finish (up to the grace period), close connections."""
        for runner in (self._runner, self._metrics_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._metrics_runner = None


def _kept_headers(exc: web.HTTPException) -> dict[str, str]:
    """Headers of aiohttp's own error answers worth keeping (Allow on a 405)."""
    return {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
