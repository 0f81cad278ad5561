"""The served models: load (session, warm-up, reference check, batcher), look up, unload, statistics."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ganserve.core.contract import ModelCard, check_model_name, list_models
from ganserve.core.errors import GanserveError, RepositoryError
from ganserve.core.precisions import PRECISIONS
from ganserve.serving import status
from ganserve.serving.batcher import Batcher, BatchingConfig
from ganserve.serving.metrics import ServerMetrics
from ganserve.serving.proto.inference import model_config_pb2
from ganserve.serving.repository import ModelSource, read_model
from ganserve.serving.precision import Choice
from ganserve.serving.runtime import OrtRunner, RunnerPool, RuntimeSettings, choose_runner, stream_runners

log = logging.getLogger("ganserve.serving")

READY, UNAVAILABLE = "READY", "UNAVAILABLE"


@dataclass
class BatchingOverrides:
    """CLI overrides of config.pbtxt's dynamic_batching (None = keep the config's value)."""

    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    max_queue_size: int | None = None
    disabled: bool = False


def batching_config(config: model_config_pb2.ModelConfig, overrides: BatchingOverrides) -> BatchingConfig:
    """BatchingConfig from the model config's max_batch_size/dynamic_batching, then the CLI overrides."""
    defaults = BatchingConfig()
    max_batch = max(1, config.max_batch_size)
    preferred: list[int] = []
    delay_us = defaults.max_queue_delay_us
    if config.HasField("dynamic_batching"):
        preferred = list(config.dynamic_batching.preferred_batch_size)
        delay_us = int(config.dynamic_batching.max_queue_delay_microseconds)
    if overrides.max_batch_size is not None:
        max_batch = overrides.max_batch_size
    if overrides.max_queue_delay_us is not None:
        delay_us = overrides.max_queue_delay_us
    try:
        return BatchingConfig(
            max_batch_size=max_batch,
            preferred_batch_sizes=[b for b in preferred if 1 <= b <= max_batch],
            max_queue_delay_us=delay_us,
            max_queue_size=defaults.max_queue_size if overrides.max_queue_size is None else overrides.max_queue_size,
            enabled=not overrides.disabled and config.max_batch_size > 0 and config.HasField("dynamic_batching"),
        )
    except ValueError as exc:
        raise RepositoryError(f"model {config.name!r}: batching settings: {exc}") from exc


@dataclass
class Stats:
    """Counters in Triton's ModelStatistics terms (durations in ns)."""

    inference_count: int = 0  # rows inferred
    execution_count: int = 0  # network runs
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    queue_count: int = 0
    queue_ns: int = 0
    compute_count: int = 0
    compute_ns: int = 0
    last_inference_ms: int = 0
    batch_counts: dict[int, list[int]] = field(default_factory=dict)  # rows -> [count, compute ns]

    def record(self, ok: bool, ns: int) -> None:
        """Count one finished request (success or failure) and its time in the server."""
        if ok:
            self.success_count += 1
            self.success_ns += ns
        else:
            self.fail_count += 1
            self.fail_ns += ns


class VersionObserver:
    """BatchObserver of one model version: feeds its Stats and the Prometheus metrics."""

    def __init__(self, stats: Stats, metrics: ServerMetrics) -> None:
        self.stats, self.metrics = stats, metrics

    def on_batch(self, model: str, batch_rows: int, queue_seconds: list[float]) -> None:
        self.stats.queue_count += len(queue_seconds)
        self.stats.queue_ns += int(sum(queue_seconds) * 1e9)
        self.metrics.observe_batch(model, batch_rows, queue_seconds)


@dataclass
class ServedVersion:
    """A loaded version: its session, its batcher and its counters."""

    version: int
    runner: OrtRunner | RunnerPool
    batcher: Batcher
    stats: Stats
    choice: Choice | None = None


@dataclass
class ServedModel:
    """A model the server knows of, ready or not (with the reason)."""

    name: str
    state: str
    reason: str = ""
    source: ModelSource | None = None
    versions: dict[int, ServedVersion] = field(default_factory=dict)

    @property
    def card(self) -> ModelCard | None:
        return self.source.card if self.source else None

    @property
    def config(self) -> model_config_pb2.ModelConfig:
        return self.source.config if self.source else model_config_pb2.ModelConfig(name=self.name)

    def latest(self) -> ServedVersion:
        return self.versions[max(self.versions)]


class ModelManager:
    """Owns every served model; one failing model never stops the others."""

    def __init__(self, repo: Path, settings: RuntimeSettings, overrides: BatchingOverrides, metrics: ServerMetrics,
                 executor: Executor | None = None) -> None:
        self.repo = Path(repo)
        self.settings = settings
        self.overrides = overrides
        self.metrics = metrics
        self.executor = executor
        self.models: dict[str, ServedModel] = {}
        self._lock = asyncio.Lock()

    async def load_all(self) -> None:
        """Load every model folder of the repository."""
        for name in list_models(self.repo):
            await self.load(name)

    async def load(self, name: str) -> ServedModel:
        """(Re)load one model; on failure it is recorded UNAVAILABLE with the reason."""
        try:
            check_model_name(name)
        except RepositoryError as exc:
            raise status.invalid(str(exc)) from exc
        if not (self.repo / name).is_dir():
            raise status.not_found(f"model {name!r} is not in the repository")
        async with self._lock:
            old = self.models.get(name)
            try:
                source = await asyncio.to_thread(read_model, self.repo, name)
                versions = {}
                for v in source.versions:
                    versions[v] = await self._load_version(source, v)
                _publish_choice(source.config, versions[max(versions)])
                model = ServedModel(name=name, state=READY, source=source, versions=versions)
            except GanserveError as exc:
                log.error("model %s: unavailable: %s", name, exc)
                model = ServedModel(name=name, state=UNAVAILABLE, reason=str(exc))
            self.models[name] = model
            self.metrics.model_ready.labels(name).set(1 if model.state == READY else 0)
            if old is not None:
                await self._close(old)
            return model

    async def _load_version(self, source: ModelSource, version: int) -> ServedVersion:
        providers, precision = model_pins(source.config)
        choice = await asyncio.to_thread(choose_runner, source.path / str(version), source.card,
                                         source.reference_path(version), self.settings, providers, precision)
        runner = await asyncio.to_thread(stream_runners, choice, self.settings)
        log.info("model %s v%d: serving %s; candidates:\n  %s", source.name, version, choice.summary,
                 "\n  ".join(t.line() for t in choice.table))
        self.metrics.set_candidates(source.name, version, [(t.provider, t.precision, t.status, t.p50_ms)
                                                           for t in choice.table if t.p50_ms is not None])
        stats = Stats()
        batching = dataclasses.replace(batching_config(source.config, self.overrides), workers=self.settings.streams)
        batcher = Batcher(self._timed_run(source.name, runner, stats), batching,
                          name=source.name, observer=VersionObserver(stats, self.metrics), executor=self.executor)
        self.metrics.track_queue(source.name, batcher.queue_depth)
        return ServedVersion(version=version, runner=runner, batcher=batcher, stats=stats, choice=choice)

    def _timed_run(self, name: str, runner: OrtRunner | RunnerPool, stats: Stats):
        """Wrap the session run to count executions and compute time per batch size."""
        def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            start = time.perf_counter_ns()
            out = runner.run(feeds)
            ns = time.perf_counter_ns() - start
            rows = int(next(iter(feeds.values())).shape[0]) if feeds else 1
            stats.execution_count += 1
            stats.inference_count += rows
            stats.compute_count += 1
            stats.compute_ns += ns
            entry = stats.batch_counts.setdefault(rows, [0, 0])
            entry[0] += 1
            entry[1] += ns
            stats.last_inference_ms = int(time.time() * 1000)
            self.metrics.compute_seconds.labels(name).observe(ns / 1e9)
            return out
        return run

    async def unload(self, name: str) -> None:
        """Stop serving a model (draining what its batcher accepted)."""
        async with self._lock:
            model = self.models.get(name)
            if model is None:
                raise status.not_found(f"unknown model {name!r}")
            model.state, model.reason = UNAVAILABLE, "unloaded"
            self.metrics.model_ready.labels(name).set(0)
            await self._close(model)
            model.versions = {}

    def get(self, name: str, version: str = "") -> tuple[ServedModel, ServedVersion]:
        """The ready model and version a request names; NOT_FOUND / FAILED_PRECONDITION otherwise."""
        model = self.models.get(name)
        if model is None:
            raise status.not_found(f"unknown model {name!r} (served: {', '.join(sorted(self.models)) or 'none'})")
        if model.state != READY:
            raise status.precondition(f"model {name!r} is not available: {model.reason}")
        if not version:
            return model, model.latest()
        if not version.isdigit() or int(version) not in model.versions:
            raise status.not_found(f"model {name!r} has no loaded version {version!r} "
                                   f"(loaded: {', '.join(str(v) for v in sorted(model.versions))})")
        return model, model.versions[int(version)]

    async def close(self, drain: bool = True) -> None:
        """Close every batcher; with drain, accepted requests finish first."""
        await asyncio.gather(*(self._close(m, drain) for m in self.models.values()))

    @staticmethod
    async def _close(model: ServedModel, drain: bool = True) -> None:
        await asyncio.gather(*(v.batcher.close(drain=drain) for v in model.versions.values()))


PIN_KEYS = ("precision", "providers")


def model_pins(config: model_config_pb2.ModelConfig) -> tuple[list[str] | None, str | None]:
    """Providers and precision a model's config.pbtxt pins through its parameters (None = server settings)."""
    values = {k: config.parameters[k].string_value.strip() for k in PIN_KEYS if k in config.parameters}
    providers = [p for p in values.get("providers", "").split(",") if p.strip()] or None
    precision = values.get("precision") or None
    if precision == "auto":
        precision = None
    if precision is not None and precision not in PRECISIONS:
        raise RepositoryError(f"model {config.name!r}: config.pbtxt parameter precision={precision!r} is not one of "
                              f"auto, {', '.join(PRECISIONS)}")
    return providers, precision


def _publish_choice(config: model_config_pb2.ModelConfig, served: ServedVersion) -> None:
    """Show the latest version's choice and its table in the ModelConfig the server answers with."""
    if served.choice is None:
        return
    for key, value in served.choice.parameters().items():
        config.parameters[key].string_value = value
