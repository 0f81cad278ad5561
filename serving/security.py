"""Transport security and bearer tokens for both protocols: TLS (and mutual TLS) credentials, the token set, and the
gRPC interceptor that refuses unauthenticated calls before any work is done.

Health and readiness stay open (orchestrators and load balancers probe them without a token); everything else a
token protects: inference, the image API, metadata and model control.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

import grpc

from ganserve.core.errors import GanserveError

log = logging.getLogger("ganserve.serving")

# gRPC methods that need no token, by their exact names (gRPC routes on the exact method path, so a name is either
# one of these or needs the token): health, liveness and readiness for probes, reflection (the schema only).
HEALTH_GRPC_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch",
                                 "/inference.GRPCInferenceService/ServerLive",
                                 "/inference.GRPCInferenceService/ServerReady",
                                 "/inference.GRPCInferenceService/ModelReady"})
OPEN_GRPC_METHODS = HEALTH_GRPC_METHODS | {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                           "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}


@dataclass
class TlsSettings:
    """PEM files: the server's certificate chain and key, and (for mutual TLS) the CA that signs client certificates."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    def read(self) -> tuple[bytes, bytes, bytes | None]:
        """The three files' bytes; a missing or unreadable one is a one-line error."""
        def one(path: Path, what: str) -> bytes:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise GanserveError(f"{what} {path}: {exc.strerror or exc}") from exc
            if b"-----BEGIN" not in data:
                raise GanserveError(f"{what} {path}: not a PEM file")
            return data
        return (one(self.cert, "--tls-cert"), one(self.key, "--tls-key"),
                one(self.client_ca, "--tls-client-ca") if self.client_ca else None)

    def grpc_credentials(self) -> grpc.ServerCredentials:
        cert, key, ca = self.read()
        self.ssl_context()  # the same files must also load as an SSL context: a key that does not match fails here
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """The HTTP side's context: TLS 1.2 or newer, client certificates required under mutual TLS."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self.cert), str(self.key))
            if self.client_ca is not None:
                context.load_verify_locations(cafile=str(self.client_ca))
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise GanserveError(f"TLS files --tls-cert {self.cert} / --tls-key {self.key}"
                                f"{f' / --tls-client-ca {self.client_ca}' if self.client_ca else ''}: {exc}") from exc
        return context


class Tokens:
    """The bearer tokens a server accepts (one per line of the token file; '#' starts a comment line).

    A presented token is compared with every accepted one in constant time, so neither which token matched nor how
    much of one matched shows in the time taken; tokens are never logged.
    """

    def __init__(self, tokens: list[str]) -> None:
        if not tokens:
            raise GanserveError("the token file holds no token (one per line)")
        for token in tokens:
            if len(token) < 16 or any(c.isspace() for c in token):
                raise GanserveError("every token must be at least 16 characters with no spaces (the file's line "
                                    f"{tokens.index(token) + 1} is not)")
        self._tokens = [t.encode() for t in tokens]

    @classmethod
    def from_file(cls, path: Path) -> "Tokens":
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GanserveError(f"--auth-token-file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
        return cls([line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")])

    def accepts(self, authorization: str | None) -> bool:
        """Whether an Authorization value ("Bearer <token>") carries an accepted token."""
        if not authorization:
            return False
        scheme, _, presented = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        candidate = presented.strip().encode()
        matched = False
        for token in self._tokens:  # no early exit: every token is compared
            matched |= hmac.compare_digest(candidate, token)
        return matched


MISSING = "a bearer token is required (metadata/header 'authorization: Bearer <token>')"
WRONG = "the bearer token is not accepted"


def refusal(authorization: str | None) -> str:
    """Why a call without an accepted token is refused (says whether one was sent, never what it was)."""
    return WRONG if authorization else MISSING


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every protected gRPC call without an accepted token with UNAUTHENTICATED, before its body is parsed."""

    def __init__(self, tokens: Tokens, on_refused: Callable[[str], None] | None = None) -> None:
        self.tokens = tokens
        self.on_refused = on_refused

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = details.method
        if method in OPEN_GRPC_METHODS:
            return await continuation(details)
        authorization = next((v for k, v in (details.invocation_metadata or ()) if k == "authorization"), None)
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        if self.tokens.accepts(authorization):
            return await continuation(details)
        handler = await continuation(details)
        if handler is None:  # an unknown method: let gRPC answer UNIMPLEMENTED as usual
            return handler
        if self.on_refused is not None:
            self.on_refused(method)
        message = refusal(authorization)
        if handler.request_streaming or handler.response_streaming:
            async def deny_stream(requests, context: grpc.aio.ServicerContext):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
                yield  # pragma: no cover  (abort raises; this makes the handler a generator)
            return grpc.stream_stream_rpc_method_handler(deny_stream)

        async def deny(request: bytes, context: grpc.aio.ServicerContext):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        return grpc.unary_unary_rpc_method_handler(deny)
