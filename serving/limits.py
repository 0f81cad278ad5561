"""The front door's limits: what a slow, idle or greedy client may hold of the server, each with its default and why.

One dataclass, one flag per field (`ganserve serve --help`); docs/security.md explains every value.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc

from ganserve.serving.security import HEALTH_GRPC_METHODS


@dataclass(frozen=True)
class Limits:
    """Timeouts and caps on both protocols."""

    # HTTP: a request's head (request line and headers) must arrive within this after its first byte (slowloris)
    header_timeout_s: float = 10.0
    # HTTP: a request's body must arrive within this once its head is in (64 MiB at ~9 Mbit/s)
    body_timeout_s: float = 60.0
    # HTTP keep-alive and gRPC: a connection with nothing in flight is closed after this
    idle_timeout_s: float = 30.0
    # HTTP: connections held at once; past it a connection may ask health/readiness only (503 otherwise, then closed)
    max_connections: int = 256
    # gRPC: RPCs in flight at once; past it RESOURCE_EXHAUSTED (health, liveness and readiness are always answered)
    max_rpcs: int = 256
    # gRPC: a connection is asked to go away after this (then max_connection_age_grace for its calls to finish),
    # so long-lived clients re-balance across replicas
    max_connection_age_s: float = 3600.0
    max_connection_age_grace_s: float = 30.0
    # gRPC: a client pinging more often than this (with no call in flight) is told to go away after 2 strikes
    min_ping_interval_s: float = 10.0
    # HTTP: a KServe v2 REST JSON body over this is refused with 413 (the binary tensor extension carries more)
    max_json_mb: float = 8.0
    # memory: requests run only while the sum of their estimated costs fits this (0 = the container's limit, else
    # the machine's memory, less max(256 MiB, 10%): serving/memory.py)
    max_memory_mib: int = 0

    @property
    def max_json_bytes(self) -> int:
        return int(self.max_json_mb * 1024 * 1024)


def grpc_options(limits: Limits) -> list[tuple[str, int]]:
    """gRPC core channel arguments for the server: idle and aged connections closed, client pings policed."""
    ms = lambda seconds: int(seconds * 1000)  # noqa: E731
    return [
        ("grpc.max_connection_idle_ms", ms(limits.idle_timeout_s)),
        ("grpc.max_connection_age_ms", ms(limits.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(limits.max_connection_age_grace_s)),
        # the server pings a silent client every 60 s and drops it when no answer comes within 20 s
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # keep-alive enforcement: a client pinging more often than this gets GOAWAY (too_many_pings) on strike 3
        ("grpc.http2.min_ping_interval_without_data_ms", ms(limits.min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


class RpcCap(grpc.aio.ServerInterceptor):
    """At most `cap` calls in flight; one more is answered RESOURCE_EXHAUSTED at once, before any work. Health,
    liveness and readiness are not counted and always answered, so probes see a busy server as alive and ready."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.in_flight = 0

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method in HEALTH_GRPC_METHODS:
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary))
        if handler.stream_stream:
            return handler._replace(stream_stream=self._stream(handler.stream_stream))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream))
        return handler._replace(stream_unary=self._unary(handler.stream_unary))

    async def _enter(self, context: grpc.aio.ServicerContext) -> None:
        if self.in_flight >= self.cap:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the server has its maximum of {self.cap} calls "
                                "in flight (--max-rpcs); retry later")
        self.in_flight += 1

    def _unary(self, behaviour):
        async def counted(request, context: grpc.aio.ServicerContext):
            await self._enter(context)
            try:
                return await behaviour(request, context)
            finally:
                self.in_flight -= 1
        return counted

    def _stream(self, behaviour):
        if not inspect.isasyncgenfunction(behaviour):  # a coroutine that writes with context.write
            return self._unary(behaviour)

        async def counted(request, context: grpc.aio.ServicerContext):
            await self._enter(context)
            try:
                async for response in behaviour(request, context):
                    yield response
            finally:
                self.in_flight -= 1
        return counted
