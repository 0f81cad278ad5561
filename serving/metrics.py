"""Prometheus metrics for one server (its own registry), fed by the servicers and the batchers."""

from __future__ import annotations

import weakref
from typing import Callable, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)
# The model label of requests naming a model the server does not know: one series for all of them, so a client
# cannot grow /metrics (or the server's memory) by asking for new names.
UNKNOWN_MODEL = "_unknown"


class ShapeCounted(Protocol):
    """A served runner that counts the input shapes its sessions compiled (serving.runtime's OrtRunner/RunnerPool)."""

    @property
    def compiled_shapes(self) -> int: ...

    on_evict: Callable[[], None] | None


class ServerMetrics:
    """Request counts by status code, latencies, queue depth and time, batch sizes — labelled per model."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("ganserve_requests", "Requests finished, by model, method, gRPC status code (HTTP "
                                "answers map onto the same codes) and protocol", ["model", "method", "code", "protocol"],
                                registry=r)
        self.latency = Histogram("ganserve_request_seconds", "Request latency inside the server",
                                 ["model", "method", "protocol"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_seconds = Histogram("ganserve_stage_seconds", "Image API time per stage (decode, infer, encode) of "
                                       "a request, either protocol", ["model", "stage"], buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.queue_depth = Gauge("ganserve_queue_depth", "Requests waiting in the model's batcher", ["model"], registry=r)
        self.queue_seconds = Histogram("ganserve_queue_seconds", "Time a request waited before its batch ran",
                                       ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("ganserve_batch_rows", "Rows per network run (batch size)", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.compute_seconds = Histogram("ganserve_compute_seconds", "onnxruntime time per network run", ["model"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.poll_refused = Counter("ganserve_poll_refused", "Poll mode: changes of a model folder refused (a version "
                                    "that failed to load or its reference check); the serving versions stay",
                                    ["model"], registry=r)
        self.model_ready = Gauge("ganserve_model_ready", "1 when the model serves, else 0", ["model"], registry=r)
        self.candidate_ms = Gauge("ganserve_candidate_p50_ms", "Load-time p50 of each provider/precision candidate "
                                  "on the typical input; chosen=1 marks the one served, status the check's verdict",
                                  ["model", "version", "provider", "precision", "status", "chosen"], registry=r)
        self.memory_budget = Gauge("ganserve_memory_budget_bytes", "The memory budget requests in flight must fit "
                                   "(--max-memory-mib)", registry=r)
        self.memory_in_flight = Gauge("ganserve_memory_in_flight_bytes", "Estimated memory of the requests admitted "
                                      "and not yet done", registry=r)
        self.memory_refused = Counter("ganserve_memory_refused", "Requests refused before running, by reason "
                                      "(over_budget: could never fit; output_pixels: over --max-output-pixels; "
                                      "timeout: the deadline passed while waiting for memory)", ["reason"], registry=r)
        self.compiled_shapes = Gauge("ganserve_compiled_shapes", "Distinct input shapes the model's sessions hold "
                                     "compiled (OpenVINO/CUDA; at most --max-compiled-shapes per session)", ["model"],
                                     registry=r)
        self.shape_evictions = Counter("ganserve_shape_evictions", "Sessions rebuilt because a new input shape would "
                                       "pass --max-compiled-shapes (the old session and its shapes are dropped)",
                                       ["model"], registry=r)
        self._shape_runners: dict[str, weakref.WeakSet] = {}
        self._candidate_labels: dict[str, list[tuple[str, ...]]] = {}
        self.known: Callable[[str], bool] = lambda name: True  # the server sets it to "is this model in the repository"

    def observe_request(self, model: str, method: str, code: str, seconds: float, protocol: str = "grpc") -> None:
        if model != "-" and not self.known(model):
            model = UNKNOWN_MODEL
        self.requests.labels(model, method, code, protocol).inc()
        self.latency.labels(model, method, protocol).observe(seconds)

    def observe_stages(self, model: str, decode_s: float, infer_s: float, encode_s: float) -> None:
        for stage, seconds in (("decode", decode_s), ("infer", infer_s), ("encode", encode_s)):
            self.stage_seconds.labels(model, stage).observe(seconds)

    def observe_batch(self, model: str, rows: int, queue_seconds: list[float]) -> None:
        self.batch_rows.labels(model).observe(rows)
        for q in queue_seconds:
            self.queue_seconds.labels(model).observe(q)

    def set_candidates(self, model: str, version: int, rows: list[tuple[str, str, str, float]]) -> None:
        """Publish one version's choice table: (provider, precision, status, p50 ms) per tried candidate."""
        for labels in self._candidate_labels.pop(f"{model}/{version}", []):
            self.candidate_ms.remove(*labels)
        kept = []
        for provider, precision, status, ms in rows:
            labels = (model, str(version), provider, precision, status, "1" if status == "chosen" else "0")
            self.candidate_ms.labels(*labels).set(ms)
            kept.append(labels)
        self._candidate_labels[f"{model}/{version}"] = kept

    def track_queue(self, model: str, depth: Callable[[], int]) -> None:
        """Make the queue-depth gauge read the batcher live at scrape time."""
        self.queue_depth.labels(model).set_function(depth)

    def track_shapes(self, model: str, runner: ShapeCounted) -> None:
        """Count a loaded version's compiled shapes in its model's gauge (read at scrape time, summed over the versions
        still in memory: weak references, so a retired version leaves once freed) and its rebuilds in the counter."""
        live = self._shape_runners.setdefault(model, weakref.WeakSet())
        live.add(runner)
        runner.on_evict = self.shape_evictions.labels(model).inc
        self.compiled_shapes.labels(model).set_function(lambda: sum(r.compiled_shapes for r in list(live)))
