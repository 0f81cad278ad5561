"""Shared request handling for the servicers: shutdown gate, deadline, status mapping, metrics."""

from __future__ import annotations

import logging
import time
from typing import Awaitable, Callable, TypeVar

import grpc

from ganserve.serving import status
from ganserve.serving.metrics import ServerMetrics

log = logging.getLogger("ganserve.serving")
T = TypeVar("T")


class CallGate:
    """Knows whether the server still takes work; every RPC passes through `run`."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        self.draining = False  # shutting down: readiness is false, requests are still taken (--drain-seconds)
        self.closing = False  # shutting down: new requests are refused

    def deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        """The client's deadline as absolute time.monotonic(), or None."""
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    async def outcome(self, method: str, model: str, work: Callable[[], Awaitable[T]],
                      protocol: str = "grpc") -> tuple[T | None, status.ServingError | None]:
        """Run one request's work; return (result, None) or (None, the status it failed with); record metrics
        (labelled by protocol, grpc or http: both share this gate, the model manager and the batchers)."""
        start = time.perf_counter()
        err: status.ServingError | None = None
        result: T | None = None
        try:
            if self.closing:
                raise status.unavailable("server is shutting down")
            result = await work()
        except Exception as exc:  # every failure becomes a status; unexpected ones are logged in full
            err = status.from_exception(exc, model)
            if err.code == grpc.StatusCode.INTERNAL:
                log.exception("%s on model %r failed", method, model)
        code = err.code.name if err else "OK"
        self.metrics.observe_request(model or "-", method, code, time.perf_counter() - start, protocol)
        return result, err

    async def run(self, context: grpc.aio.ServicerContext, method: str, model: str,
                  work: Callable[[], Awaitable[T]]) -> T:
        """Run a unary request's work and answer with its result or its status."""
        result, err = await self.outcome(method, model, work)
        if err is not None:
            await context.abort(err.code, err.message)
        return result  # type: ignore[return-value]
