"""One exception type carrying a gRPC status code, and the mapping of batcher errors onto codes."""

from __future__ import annotations

import grpc

from ganserve.serving import batcher


class ServingError(Exception):
    """A request failed with a definite gRPC status; the message goes to the client verbatim."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def too_large(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def unavailable(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def from_exception(exc: BaseException, model: str = "") -> ServingError:
    """Turn any failure inside a request into a ServingError (batcher errors get their own codes)."""
    where = f"model {model!r}: " if model else ""
    if isinstance(exc, ServingError):
        return exc
    if isinstance(exc, batcher.QueueFullError):
        return too_large(f"{where}queue full, retry later ({exc})")
    if isinstance(exc, batcher.DeadlineExceededError):
        return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{where}deadline passed while the request was queued")
    if isinstance(exc, batcher.BatcherClosedError):
        return unavailable(f"{where}server is shutting down")
    return ServingError(grpc.StatusCode.INTERNAL, f"{where}{type(exc).__name__}: {exc}")
