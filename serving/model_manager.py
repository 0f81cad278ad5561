"""The served models: load (session, warm-up, reference check, batcher), look up, unload, statistics."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import numpy as np

from ganserve.core.contract import REFERENCE_FILE, ModelCard, check_model_name, model_versions
from ganserve.core.errors import GanserveError, RepositoryError
from ganserve.core.precisions import PRECISIONS
from ganserve.serving import status
from ganserve.core.memory_cost import (MIN_BASE_BYTES, SAFETY, CostModel, card_key, default_cost, measure_cost,
                                       probe_sides, run_peak)
from ganserve.serving.admission import mib
from ganserve.serving.choice_cache import ChoiceCache
from ganserve.serving.batcher import Batcher, BatchingConfig
from ganserve.serving.metrics import ServerMetrics
from ganserve.serving.proto.inference import model_config_pb2
from ganserve.serving.repository import ModelSource, model_files, read_model, scan_repository
from ganserve.serving.candidates import Choice, load_reference_cases
from ganserve.serving.runtime import (OrtRunner, RunnerPool, RuntimeSettings, choose_runner, stream_runners,
                                      typical_inputs)

log = logging.getLogger("ganserve.serving")

READY, UNAVAILABLE = "READY", "UNAVAILABLE"
UNLOADED = "unloaded by model control; poll mode leaves it unloaded until RepositoryModelLoad"


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
    """A loaded version: its session, its batcher, its counters, and the requests holding it (leases).

    A version being replaced (poll mode, model control) keeps serving the requests that already hold it and is
    closed only when the last one is done, so no request sees two versions or a closed batcher.
    """

    version: int
    runner: OrtRunner | RunnerPool
    batcher: Batcher
    stats: Stats
    choice: Choice | None = None
    files: tuple = ()  # (name, size, mtime_ns) of the version folder's files at load: poll mode's change test
    cost: CostModel = field(default_factory=lambda: default_cost(1))  # working memory of one run (admission)
    leases: int = 0
    _idle: asyncio.Event | None = field(default=None, repr=False)

    def release(self) -> None:
        self.leases -= 1
        if self.leases == 0 and self._idle is not None:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no request holds this version."""
        while self.leases > 0:
            self._idle = asyncio.Event()
            await self._idle.wait()


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
        self._retiring: set[asyncio.Task] = set()
        self._refused: dict[str, tuple] = {}  # poll mode: models whose change was refused, by their folder's state then
        self._unloaded: set[str] = set()  # unloaded by model control: poll mode leaves them unloaded
        self.skipped: dict[str, str] = {}  # repository folders not served (a name the server cannot use), with why
        self.on_change: Callable[[], Awaitable[None]] | None = None  # after the served set changes (health follows it)

    async def load_all(self) -> None:
        """Load every model folder of the repository; folders with a name the server cannot serve are skipped."""
        for name in self._scan():
            await self._load(name)
        await self._changed()

    def _scan(self) -> list[str]:
        """The repository's model names; skipped folders go to `skipped`, each logged once while it stays there."""
        names, skipped = scan_repository(self.repo)
        for name, reason in skipped.items():
            if name not in self.skipped:
                log.warning("repository folder %r: %s", name, reason)
        self.skipped = skipped
        return names

    async def _changed(self) -> None:
        """Tell `on_change` the served set changed; its failure is logged, never the caller's."""
        if self.on_change is None:
            return
        try:
            await self.on_change()
        except Exception:  # noqa: BLE001  (a health update must not fail a load, an unload or a poll)
            log.exception("on_change after a model change failed")

    async def load(self, name: str) -> ServedModel:
        """(Re)load one model from its folder (start-up, model control); on failure it is recorded UNAVAILABLE with
        the reason. A model that was serving is replaced only once the new one has loaded; its versions close when
        their last request is done. Poll mode manages the model again from now on."""
        model = await self._load(name)
        await self._changed()
        return model

    async def _load(self, name: str) -> ServedModel:
        """`load` without telling `on_change` (load_all tells it once for the whole repository)."""
        try:
            check_model_name(name)
        except RepositoryError as exc:
            raise status.invalid(str(exc)) from exc
        if not (self.repo / name).is_dir():
            raise status.not_found(f"model {name!r} is not in the repository")
        async with self._lock:
            old = self.models.get(name)
            self._unloaded.discard(name)
            self._refused.pop(name, None)
            state = _folder_state(self.repo / name)
            try:
                source = await asyncio.to_thread(read_model, self.repo, name)
                model = await self._assemble(source, {}, require_pass=False)
            except GanserveError as exc:
                log.error("model %s: unavailable: %s", name, exc)
                model = ServedModel(name=name, state=UNAVAILABLE, reason=str(exc))
                self._refused[name] = state  # poll mode tries it again once its folder changes
            self._install(model, old)
            return model

    async def _assemble(self, source: ModelSource, keep: dict[int, ServedVersion], require_pass: bool) -> ServedModel:
        """A READY ServedModel of the source's versions: those in `keep` as they are, the others loaded now (and,
        with `require_pass`, refused unless their served candidate passed the reference check)."""
        versions: dict[int, ServedVersion] = {}
        try:
            for v in source.versions:
                if v in keep:
                    versions[v] = keep[v]
                    continue
                if require_pass:
                    unchecked = await asyncio.to_thread(_without_reference, source, v)
                    if unchecked:
                        raise RepositoryError(unchecked)
                versions[v] = await self._load_version(source, v)
                choice = versions[v].choice
                if require_pass and choice is not None and not choice.passed:
                    row = next((t for t in choice.table if t.status == "chosen"), None)
                    raise RepositoryError(f"version {v} failed its reference check"
                                          f"{f' ({row.quality})' if row and row.quality else ''}")
        except BaseException:
            await asyncio.gather(*(sv.batcher.close(drain=False) for v, sv in versions.items() if v not in keep))
            raise
        _publish_choice(source.config, versions[max(versions)])
        _publish_batching(source.config, batching_config(source.config, self.overrides))
        return ServedModel(name=source.name, state=READY, source=source, versions=versions)

    def _install(self, model: ServedModel, old: ServedModel | None) -> None:
        """Serve `model` from now on; versions of `old` it does not keep close after their last request."""
        self.models[model.name] = model
        self.metrics.model_ready.labels(model.name).set(1 if model.state == READY else 0)
        if model.versions:
            self.metrics.track_queue(model.name, model.latest().batcher.queue_depth)
        if old is not None:
            kept = {id(v) for v in model.versions.values()}
            for version in old.versions.values():
                if id(version) not in kept:
                    self._retire(model.name, version)

    def _retire(self, name: str, version: ServedVersion) -> None:
        async def retire() -> None:
            await version.wait_idle()
            await version.batcher.close(drain=True)
            log.info("model %s v%d: unloaded (its last request is done)", name, version.version)
        task = asyncio.create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def poll(self) -> list[str]:
        """Poll mode: bring the served models in line with the repository folder; returns what changed, one line each.

        New version folders (written atomically, as `ganserve export` does) load beside the serving ones with their
        own provider/precision choice and reference check, then take new requests per the version policy; versions
        the policy drops close after their last request. An edit of config.pbtxt or model_card.json loads every
        version again as a new generation under the same rules. A version that fails to load, fails its reference
        check or has no reference set, and a bad edit, are reported once (log, RepositoryIndex reason,
        ganserve_poll_refused_total) and never replace the serving generation; they are tried again only when a file
        of the model folder changes. Models whose folder is gone are unloaded the same way; models unloaded by model
        control stay unloaded; folders with names the server cannot serve are skipped (see `skipped`).
        """
        changes: list[str] = []
        on_disk = set(self._scan())
        for name in sorted(on_disk | set(self.models)):
            async with self._lock:
                line = await self._poll_one(name, name in on_disk)
            if line:
                changes.append(line)
                log.info("poll: %s", line)
        if changes:
            await self._changed()
        return changes

    async def _poll_one(self, name: str, present: bool) -> str:
        """Poll one model: unload it when its folder is gone, else load what changed (new or changed versions; every
        version again, as a new generation, when config.pbtxt or model_card.json changed), each version only if it
        passes its reference check. A refused change is not tried again until something in the folder changes."""
        old = self.models.get(name)
        if not present:
            self._refused.pop(name, None)
            if old is None or old.state != READY:
                self.models.pop(name, None)
                return "" if old is None else f"{name}: gone from the repository"
            self._install(ServedModel(name=name, state=UNAVAILABLE, reason="removed from the repository"), old)
            return f"{name}: removed from the repository, unloading"
        if name in self._unloaded:  # model control unloaded it: it stays so until RepositoryModelLoad
            if old is None:  # its folder went and came back
                self._install(ServedModel(name=name, state=UNAVAILABLE, reason=UNLOADED), None)
            return ""
        state = _folder_state(self.repo / name)
        if self._refused.get(name) == state:
            return ""  # refused before and nothing in its folder changed since
        serving = old.versions if old is not None and old.state == READY else {}
        edited = bool(serving) and state[0] != old.source.files
        try:
            source = await asyncio.to_thread(read_model, self.repo, name)
        except GanserveError as exc:
            return self._refuse(name, old, "the config.pbtxt/model_card.json edit" if edited else "the model folder",
                                str(exc), state)
        same_files = bool(serving) and source.files == old.source.files
        fresh = {v: _version_files(source.path / str(v)) for v in source.versions}
        keep = {v: sv for v, sv in serving.items() if v in fresh and fresh[v] == sv.files} if same_files else {}
        if same_files and set(keep) == set(fresh) == set(serving):
            self._refused.pop(name, None)  # what was refused is gone from the folder: nothing left to report
            old.reason = ""
            return ""
        new = [v for v in fresh if v not in keep]
        try:
            model = await self._assemble(source, keep, require_pass=True)
        except GanserveError as exc:
            what = f"version(s) {new}" if same_files or not serving else "the config.pbtxt/model_card.json edit"
            return self._refuse(name, old, what, str(exc), state)
        self._refused.pop(name, None)
        self._install(model, old)
        dropped = sorted(set(serving) - set(model.versions))
        how = "" if same_files or not serving else " (new config.pbtxt/model_card.json: every version loaded again)"
        return (f"{name}: serving versions {sorted(model.versions)}{how}" + (f" (loaded {new})" if new else "")
                + (f"; {dropped} close after their last request" if dropped else ""))

    def _refuse(self, name: str, old: ServedModel | None, what: str, reason: str, state: tuple) -> str:
        """A change poll mode will not serve: the serving versions stay, the reason is shown with them, and the
        folder's state is kept so the same change is not tried (nor logged, nor counted) again."""
        self._refused[name] = state
        self.metrics.poll_refused.labels(name).inc()
        if old is not None and old.state == READY:
            old.reason = f"{what} refused, still serving {sorted(old.versions)}: {reason}"
            log.error("poll: model %s: %s", name, old.reason)
            return f"{name}: {what} refused: {reason}"
        self.models[name] = ServedModel(name=name, state=UNAVAILABLE, reason=reason)
        self.metrics.model_ready.labels(name).set(0)
        log.error("poll: model %s: unavailable: %s", name, reason)
        return f"{name}: unavailable: {reason}"

    async def _load_version(self, source: ModelSource, version: int) -> ServedVersion:
        files = _version_files(source.path / str(version))  # before loading: a change meanwhile shows at the next poll
        providers, precision = model_pins(source.config)
        settings = self.settings
        if not settings.streams:  # no --streams: the model's own instance_group count
            settings = dataclasses.replace(settings, streams=instance_count(source.config))
        if source.card is not None and source.card.tile_safe:
            # tile-safe models see tile-sized shapes (edge tiles included) through the image API: 45 in srresnet's
            # 300-size soak, where each rebuild cost memory (docs/memory.md); TILE_SAFE_SHAPES x the bound keeps the
            # image API clear of rebuilds and still bounds raw ModelInfer with ever new shapes
            settings = dataclasses.replace(settings,
                                           max_compiled_shapes=TILE_SAFE_SHAPES * settings.max_compiled_shapes)
        choice = await asyncio.to_thread(choose_runner, source.path / str(version), source.card,
                                         source.reference_path(version), settings, providers, precision)
        runner = await asyncio.to_thread(stream_runners, choice, settings)
        self.metrics.track_shapes(source.name, runner)
        cost = await asyncio.to_thread(_measured_cost, choice, settings, source.card)
        log.info("model %s v%d: serving %s; memory per run %s + %.0f bytes per input pixel (%s); candidates:\n  %s",
                 source.name, version, choice.summary, mib(cost.base_bytes), cost.bytes_per_pixel, cost.source,
                 "\n  ".join(t.line() for t in choice.table))
        self.metrics.set_candidates(source.name, version, [(t.provider, t.precision, t.status, t.p50_ms)
                                                           for t in choice.table if t.p50_ms is not None])
        stats = Stats()
        batching = dataclasses.replace(batching_config(source.config, self.overrides), workers=settings.streams)
        batcher = Batcher(self._timed_run(source.name, runner, stats), batching,
                          name=source.name, observer=VersionObserver(stats, self.metrics), executor=self.executor)
        return ServedVersion(version=version, runner=runner, batcher=batcher, stats=stats, choice=choice, files=files,
                             cost=cost)

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
        """Stop serving a model: new requests are refused at once, those holding it finish first."""
        async with self._lock:
            model = self.models.get(name)
            if model is None:
                raise status.not_found(f"unknown model {name!r}")
            self._unloaded.add(name)
            self._install(ServedModel(name=name, state=UNAVAILABLE, reason=UNLOADED), model)
        await self._changed()

    @contextlib.asynccontextmanager
    async def lease(self, name: str, version: str = "") -> AsyncIterator[tuple[ServedModel, ServedVersion]]:
        """`get` for the length of one request: the version stays loaded until the request is done."""
        model, served = self.get(name, version)
        served.leases += 1
        try:
            yield model, served
        finally:
            served.release()

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
        """Close every batcher; with drain, accepted requests finish first (versions being retired too)."""
        await asyncio.gather(*(self._close(m, drain) for m in self.models.values()), *list(self._retiring))

    @staticmethod
    async def _close(model: ServedModel, drain: bool = True) -> None:
        await asyncio.gather(*(v.batcher.close(drain=drain) for v in model.versions.values()))


def _folder_state(path: Path) -> tuple:
    """A model folder as poll mode sees it: config.pbtxt/model_card.json, then each version folder's files."""
    return model_files(path), tuple((v, _version_files(path / str(v))) for v in model_versions(path))


def _without_reference(source: ModelSource, version: int) -> str:
    """Why a version cannot pass a reference check ("" when it has a reference set to check against)."""
    path = source.reference_path(version)
    if path is None:
        return (f"version {version} has no {REFERENCE_FILE}; poll mode serves only versions that pass their "
                "reference check")
    if not load_reference_cases(path):
        return (f"version {version}: {REFERENCE_FILE} holds no case (in:/out: arrays); poll mode serves only "
                "versions that pass their reference check")
    return ""


def instance_count(config: model_config_pb2.ModelConfig) -> int:
    """How many runs of a model Triton would keep in flight: the sum of its instance_group counts (a group without
    a count is one instance, as in Triton), 1 when the config has no instance_group."""
    return sum(max(1, group.count) for group in config.instance_group) or 1


TILE_SAFE_SHAPES = 4  # a tile-safe model's shape bound is this many times --max-compiled-shapes (64 by default)


def _measured_cost(choice: Choice, settings: RuntimeSettings, card: ModelCard | None) -> CostModel:
    """The version's cost model: the card's (measured at export) for the chosen provider and precision, else the one
    an earlier start measured and kept in the choice cache, else measured now (and kept there)."""
    candidate = choice.candidate
    stored = CostModel.from_card(card.memory, candidate.provider, candidate.precision) if card is not None else None
    if stored is None and choice.cache_key:
        stored = CostModel.from_card(choice.cached.get("memory"), candidate.provider, candidate.precision,
                                     "choice cache")
    if stored is not None:
        return stored
    cost = _measure_cost_now(choice, settings, card)
    if choice.cache_key and settings.cache_dir is not None and "default" not in cost.source:
        choice.cached["memory"] = {card_key(candidate.provider, candidate.precision): cost.to_dict()}
        ChoiceCache(settings.cache_dir).store(choice.cache_key, {k: v for k, v in choice.cached.items()
                                                                 if k not in ("format", "key", "written")})
    return cost


def _measure_cost_now(choice: Choice, settings: RuntimeSettings, card: ModelCard | None) -> CostModel:
    """Measured on a session of the chosen candidate of its own (so no earlier run's arena hides the memory a run
    takes): on two probe sizes for an image model with free H and W, else from one run at its own input shape."""
    scale = card.scale if card is not None else 1
    candidate = choice.candidate
    runner = OrtRunner(candidate.path, settings, candidate)
    image = card.input_by_role("image") if card is not None else None
    if image is not None and len(image.shape) == 3 and image.shape[1] <= 0 and image.shape[2] <= 0:
        try:
            return measure_cost(runner.run, lambda side: typical_inputs(runner, side), scale,
                                probe_sides(card.spatial_multiple))
        except Exception as exc:  # noqa: BLE001  (a model that cannot run the probe sizes still serves)
            log.warning("model %s: memory cost not measured (%s); using the default", card.name, str(exc)[:200])
            return default_cost(scale)
    peak = run_peak(runner.run, typical_inputs(runner))
    if peak is None:
        return default_cost(scale)
    return CostModel(max(MIN_BASE_BYTES, int(SAFETY * peak)), 0.0, f"measured: {peak / 2**20:.0f} MiB, x{SAFETY}")


def _version_files(folder: Path) -> tuple:
    """What poll mode compares to see a version folder change: each file's name, size and mtime."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()


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


def _publish_batching(config: model_config_pb2.ModelConfig, batching: BatchingConfig) -> None:
    """The ModelConfig the server answers with (and checks requests' batch sizes against) says what it does: the
    command line's batching overrides replace config.pbtxt's values, and --no-batching drops dynamic_batching."""
    if config.max_batch_size <= 0:  # no batch axis: nothing to batch, nothing to publish
        return
    config.max_batch_size = batching.max_batch_size
    if not batching.enabled:
        config.ClearField("dynamic_batching")
        return
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    del config.dynamic_batching.preferred_batch_size[:]
    config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)


def _publish_choice(config: model_config_pb2.ModelConfig, served: ServedVersion) -> None:
    """Show the latest version's choice and its table in the ModelConfig the server answers with."""
    if served.choice is None:
        return
    for key, value in served.choice.parameters().items():
        config.parameters[key].string_value = value
