"""Server lifecycle: build the gRPC and HTTP servers, load models, report ready, drain on SIGTERM.

Also the Python API to run a server in-process (`ServerThread`) or as a subprocess (`start_subprocess`) and learn
the ports it bound (port 0 = any free port).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from ganserve.serving.call_gate import CallGate
from ganserve.serving.http import HttpFront
from ganserve.serving.image_api import ImageSettings, ImagesServicer
from ganserve.serving.limits import Limits, RpcCap, grpc_options
from ganserve.serving.memory import MemoryBudget, default_budget_bytes
from ganserve.serving.metrics import ServerMetrics
from ganserve.serving.model_manager import READY, BatchingOverrides, ModelManager
from ganserve.serving.oip import InferenceServicer, parsed_unary, serialize, add_inference_servicer
from ganserve.serving.proto import POOL
from ganserve.serving.proto.ganserve.v1 import images_pb2
from ganserve.serving.proto.inference import grpc_service_pb2
from ganserve.serving.runtime import RuntimeSettings
from ganserve.serving.security import AuthInterceptor, TlsSettings, Tokens
from ganserve.serving.shared_memory import SharedMemory, enabled_for

log = logging.getLogger("ganserve.serving")
READY_LINE = "ganserve serving: ready grpc={host}:{port} http={http} metrics={metrics}"
_READY_RE = re.compile(r"ganserve serving: ready grpc=(\S+):(\d+) http=(-?\d+) metrics=(-?\d+)")


@dataclass
class ServerConfig:
    """Everything `ganserve serve` can set; one field per flag."""

    repo: Path
    host: str = "127.0.0.1"
    port: int = 8001
    http_port: int = 8000  # KServe v2 REST, the image API over HTTP and the page; 0 = any free port, -1 = off
    metrics_port: int = 8002  # 0 = any free port, -1 = no metrics endpoint
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    batching: BatchingOverrides = field(default_factory=BatchingOverrides)
    images: ImageSettings = field(default_factory=ImageSettings)
    max_message_mb: int = 64
    allow_model_control: bool = False
    shared_memory: str = "auto"  # system shared memory: auto (on for a loopback host), on, off (docs/shared-memory.md)
    grace_seconds: float = 30.0
    poll_seconds: float = 0.0  # > 0: poll mode, the repository is re-read this often and new versions load safely
    drain_seconds: float = 0.0  # on SIGTERM: report NOT_SERVING but keep taking requests this long (load balancers)
    tls: TlsSettings | None = None  # both protocols (and the metrics port) over TLS; mutual TLS with a client CA
    auth_token_file: Path | None = None  # bearer tokens required on everything but health and readiness
    limits: Limits = field(default_factory=Limits)  # timeouts and caps of both protocols (docs/security.md)
    # gRPC services of one's own (grpc.GenericRpcHandler), served beside ours behind the same token check, RPC cap and
    # TLS; not a flag: for code that starts a server (docs/architecture.md, "Where does it go")
    extra_handlers: tuple[grpc.GenericRpcHandler, ...] = ()


def _add_to_pool(*files) -> None:
    """Put the health and reflection descriptors beside ours, so reflection can describe every service."""
    for file in files:
        try:
            POOL.FindFileByName(file.name)
        except KeyError:
            POOL.AddSerializedFile(file.serialized_pb)


def _add_images_servicer(images: ImagesServicer, server: grpc.aio.Server) -> None:
    """Register ganserve.v1.Images the way add_inference_servicer registers OIP: a body that is not protobuf is
    INVALID_ARGUMENT with the reason (the generated registration answers it with UNKNOWN)."""
    service = images_pb2.DESCRIPTOR.services_by_name["Images"]
    handlers = {}
    for method in service.methods:
        if method.client_streaming or method.server_streaming:
            raise TypeError(f"{method.full_name}: streaming Images methods are not registered here")
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            parsed_unary(getattr(images, method.name), getattr(images_pb2, method.input_type.name)),
            response_serializer=serialize)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


class GanServer:
    """One asyncio gRPC server with the OIP, Images, health and reflection services, plus /metrics."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        budget, where = ((config.limits.max_memory_mib * 2**20, "--max-memory-mib") if config.limits.max_memory_mib
                         else default_budget_bytes())
        log.info("memory budget for requests in flight: %d MiB (%s)", budget // 2**20, where)
        self.gate = CallGate(self.metrics, MemoryBudget(budget))
        self.models = ModelManager(config.repo, config.runtime, config.batching, self.metrics)
        self.metrics.known = lambda name: name in self.models.models  # labels only for the repository's models
        self.health = health.aio.HealthServicer()
        self.models.on_change = self._set_health  # per-model health follows load, unload and poll
        self.tokens = Tokens.from_file(config.auth_token_file) if config.auth_token_file else None
        self.shared_memory = SharedMemory(*enabled_for(config.shared_memory, config.host))
        self.port = 0
        self.http_port = -1
        self.metrics_port = -1
        self._server: grpc.aio.Server | None = None
        self._http: HttpFront | None = None
        self._poller: asyncio.Task | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> int:
        """Load every model, bind, start serving; returns the gRPC port."""
        cfg = self.config
        credentials = cfg.tls.grpc_credentials() if cfg.tls else None  # bad TLS files fail before models load
        ssl_context = cfg.tls.ssl_context() if cfg.tls else None
        await self.models.load_all()
        limit = cfg.max_message_mb * 1024 * 1024
        interceptors = [AuthInterceptor(self.tokens, self._refused)] if self.tokens else []
        interceptors.append(RpcCap(cfg.limits.max_rpcs))  # after auth: a refused call takes no slot
        self._server = grpc.aio.server(interceptors=interceptors, options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            *grpc_options(cfg.limits),
        ])
        oip = InferenceServicer(self.models, self.gate, cfg.allow_model_control, self.shared_memory)
        images = ImagesServicer(self.models, self.gate, cfg.images)
        add_inference_servicer(oip, self._server)
        _add_images_servicer(images, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if cfg.extra_handlers:
            self._server.add_generic_rpc_handlers(tuple(cfg.extra_handlers))
        _add_to_pool(health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR)
        names = [
            grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
            images_pb2.DESCRIPTOR.services_by_name["Images"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ]
        reflection.enable_server_reflection(names, self._server, pool=POOL)
        address = f"{cfg.host}:{cfg.port}"
        self.port = (self._server.add_secure_port(address, credentials) if credentials
                     else self._server.add_insecure_port(address))
        if self.port == 0:
            raise OSError(f"cannot bind {address}")
        await self._server.start()
        if cfg.http_port >= 0 or cfg.metrics_port >= 0:  # one aiohttp front serves both ports, with one auth rule
            self._http = HttpFront(oip, images, self.gate, limit, self.tokens, cfg.limits)
        if cfg.http_port >= 0:
            self.http_port = await self._http.start(cfg.host, cfg.http_port, ssl_context, cfg.grace_seconds)
        if cfg.metrics_port >= 0:
            self.metrics_port = await self._http.start_metrics(cfg.host, cfg.metrics_port, ssl_context)
        await self._set_health()
        if cfg.poll_seconds > 0:
            self._poller = asyncio.create_task(self._poll_forever(cfg.poll_seconds))
        ready = sum(m.state == READY for m in self.models.models.values())
        log.info("serving %d/%d models on %s: gRPC %d, HTTP %s%s%s", ready, len(self.models.models), cfg.host,
                 self.port, self.http_port if self.http_port >= 0 else "off", ", TLS" if cfg.tls else "",
                 ", bearer tokens required" if self.tokens else "")
        log.info("system shared memory %s: %s", "on" if self.shared_memory.enabled else "off", self.shared_memory.why)
        return self.port

    def _refused(self, method: str) -> None:
        self.metrics.observe_request("-", method.rsplit("/", 1)[-1], "UNAUTHENTICATED", 0.0)

    async def _poll_forever(self, seconds: float) -> None:
        """Poll mode: re-read the repository every `seconds`; a failing poll is logged and the next one tries again."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.models.poll()  # its changes reach health through models.on_change
            except Exception:  # noqa: BLE001  (one bad poll must not end polling or the server)
                log.exception("poll failed")

    async def _set_health(self) -> None:
        """Per-model health (service name = model name) from the models' states; ignored once shutdown began."""
        serving_status = health_pb2.HealthCheckResponse
        for name, model in self.models.models.items():
            await self.health.set(name, serving_status.SERVING if model.state == READY else serving_status.NOT_SERVING)
        await self.health.set("", serving_status.SERVING)

    async def stop(self, grace: float | None = None) -> None:
        """Refuse new work, finish accepted work within the grace period, then release everything."""
        if self.gate.draining:  # a second signal while stopping: wait for the first stop
            await self._stopped.wait()
            return
        grace = self.config.grace_seconds if grace is None else grace
        if self._poller is not None:
            self._poller.cancel()
        self.gate.draining = True
        await self.health.enter_graceful_shutdown()
        if self.config.drain_seconds > 0:  # health says NOT_SERVING; balancers stop routing here meanwhile
            log.info("shutting down: NOT_SERVING, still taking requests for %.1f s", self.config.drain_seconds)
            await asyncio.sleep(self.config.drain_seconds)
        self.gate.closing = True
        log.info("shutting down: draining accepted requests (grace %.0f s)", grace)
        stopping = [self._server.stop(grace)] if self._server is not None else []
        if self._http is not None:
            stopping.append(self._http.stop())
        await asyncio.gather(*stopping)  # both protocols finish what they accepted, then the batchers drain
        await self.models.close(drain=True)
        self.shared_memory.close()  # every request has finished: unmap the clients' regions
        self._stopped.set()
        log.info("stopped")

    async def wait(self) -> None:
        await self._stopped.wait()


async def _serve_until_signal(config: ServerConfig) -> int:
    server = GanServer(config)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the READY line: a SIGTERM right after it must drain too
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(server.stop()))
    print(READY_LINE.format(host=config.host, port=server.port, http=server.http_port, metrics=server.metrics_port),
          flush=True)
    await server.wait()
    return 0


def serve(config: ServerConfig) -> int:
    """Run a server in this process until SIGTERM/SIGINT; exit code 0 after a clean drain."""
    return asyncio.run(_serve_until_signal(config))


class ServerThread:
    """A server on its own event loop in a background thread (tests, notebooks): `start()` returns the port."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server: GanServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ganserve-server", daemon=True)

    def start(self, timeout: float = 120.0) -> int:
        self._thread.start()
        self.server = GanServer(self.config)
        return asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout)

    @property
    def port(self) -> int:
        return self.server.port if self.server else 0

    @property
    def metrics_port(self) -> int:
        return self.server.metrics_port if self.server else -1

    @property
    def http_port(self) -> int:
        return self.server.http_port if self.server else -1

    def stop(self, grace: float = 5.0, timeout: float = 60.0) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop).result(timeout)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._loop.close()

    def __enter__(self) -> "ServerThread":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Child(NamedTuple):
    """A server started by `start_subprocess` and the ports it bound (-1: that endpoint is off)."""

    proc: subprocess.Popen
    port: int
    metrics_port: int
    http_port: int


def start_subprocess(repo: str | Path, extra_args: list[str] | None = None, timeout: float = 120.0,
                     env: dict[str, str] | None = None) -> Child:
    """Start `ganserve serve` on free ports (gRPC, HTTP, metrics: 0 each unless `extra_args` set them) as a child."""
    cmd = [sys.executable, "-m", "ganserve.pipeline.cli", "serve", "--repo", str(repo), "--port", "0", "--metrics-port", "0",
           "--http-port", "0", *(extra_args or [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = _READY_RE.search(line)
        if match:
            threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
            return Child(proc, int(match.group(2)), int(match.group(4)), int(match.group(3)))
    proc.kill()
    proc.wait()
    raise RuntimeError("server did not become ready:\n" + "".join(seen[-30:]))


def _drain(stream) -> None:
    """Keep reading a child's output so it never blocks on a full pipe."""
    for _ in stream:
        pass
