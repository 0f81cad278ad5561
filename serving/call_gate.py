"""Shared request handling for the servicers: shutdown gate, deadline, status mapping, metrics."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import AsyncIterator, Awaitable, Callable, TypeVar

import grpc

from ganserve.serving import status
from ganserve.serving.admission import mib
from ganserve.serving.memory import MemoryBudget
from ganserve.serving.metrics import ServerMetrics

log = logging.getLogger("ganserve.serving")
T = TypeVar("T")


class CallGate:
    """Knows whether the server still takes work; every RPC passes through `run`."""

    def __init__(self, metrics: ServerMetrics, budget: MemoryBudget | None = None) -> None:
        self.metrics = metrics
        self.budget = budget or MemoryBudget(2**62)  # the server passes its --max-memory-mib budget
        metrics.memory_budget.set(self.budget.limit)
        metrics.memory_in_flight.set_function(lambda: self.budget.in_flight)
        self.draining = False  # shutting down: readiness is false, requests are still taken (--drain-seconds)
        self.closing = False  # shutting down: new requests are refused

    def refuse_memory(self, reason: str, message: str) -> status.ServingError:
        """A request refused before it runs (counted by reason): 413 / RESOURCE_EXHAUSTED with `message`."""
        self.metrics.memory_refused.labels(reason).inc()
        return status.too_large(message)

    @contextlib.asynccontextmanager
    async def memory(self, cost: int, deadline: float | None, what: str) -> AsyncIterator[None]:
        """Hold `cost` bytes of the memory budget for the block: refused at once if it can never fit, else waits
        (in arrival order) until it fits or the deadline passes."""
        if not self.budget.fits(cost):
            raise self.refuse_memory("over_budget", f"{what} needs about {mib(cost)} of memory, more than the "
                                     f"server's budget of {mib(self.budget.limit)} (--max-memory-mib)")
        admitted = False
        try:
            async with self.budget.admit(cost, deadline):
                admitted = True
                yield
        except TimeoutError:
            if admitted:  # the work's own timeout, not the wait's
                raise
            self.metrics.memory_refused.labels("timeout").inc()
            raise status.ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"the deadline passed while {what} waited "
                                      f"for {mib(cost)} of the server's memory budget") from None

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
