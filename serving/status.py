"""One exception type carrying a gRPC status code, and the mapping of batcher errors onto codes."""

from __future__ import annotations

import grpc

from ganserve.serving import batcher


# The HTTP status each gRPC status code answers with over REST (KServe v2 and the image API): one error class, two
# protocols. RESOURCE_EXHAUSTED is 429 (retry later: a full queue) unless the error says 413 (too large).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ServingError(Exception):
    """A request failed with a definite gRPC status; the message goes to the client verbatim.

    ``http`` overrides the HTTP status the code maps to (413 for a body or image that is too large).
    """

    def __init__(self, code: grpc.StatusCode, message: str, http: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http = http

    @property
    def http_status(self) -> int:
        return self.http or HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def too_large(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, http=413)


def too_slow(message: str) -> ServingError:
    """A client that sends its request too slowly: HTTP 408 (gRPC's nearest code is DEADLINE_EXCEEDED)."""
    return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, message, http=408)


def unauthenticated(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.UNAUTHENTICATED, message)


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
        return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{where}queue full, retry later ({exc})")
    if isinstance(exc, batcher.DeadlineExceededError):
        return ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, f"{where}deadline passed while the request was queued")
    if isinstance(exc, batcher.BatcherClosedError):
        return unavailable(f"{where}server is shutting down")
    return ServingError(grpc.StatusCode.INTERNAL, f"{where}{type(exc).__name__}: {exc}")
