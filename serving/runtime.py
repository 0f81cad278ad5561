"""ONNX Runtime sessions: execution providers, thread settings, and the per-model candidate choice at load."""

from __future__ import annotations

import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from ganserve.core.contract import ModelCard
from ganserve.core.errors import RepositoryError, first_line
from ganserve.core.machine import cpu_info
from ganserve.core.memory_cost import trim
from ganserve.core.onnxruntime_facts import CPU, CUDA, OPENVINO, PROVIDER_NAMES, typical_feeds
from ganserve.core.precisions import PRECISIONS
from ganserve.serving.choice_cache import ChoiceCache, entry_of, key_material, key_of, restore
from ganserve.serving.candidates import (
    Candidate, Choice, choose, list_candidates, load_reference_cases, reuse, version_files,
)

log = logging.getLogger("ganserve.serving")

DEFAULT_PROVIDERS = ["cuda", "openvino", "cpu"]
# Providers that compile (and keep) a kernel set per distinct input shape, so a session's memory grows with every new
# shape (measured: +0.7 MiB per shape for the OpenVINO provider on cyclegan-ab, without end); the CPU provider plans
# per run and stays flat (+16 MiB of arena for the largest size, then nothing more over 160 shapes).
SHAPE_COMPILING = (OPENVINO, CUDA)
DEFAULT_MAX_COMPILED_SHAPES = 16


def requested_providers(requested: list[str] | None = None) -> list[str]:
    """Full ORT names of the requested providers, best first, CPU always last (an unknown name is an error)."""
    wanted = [s.strip().lower() for s in (requested or DEFAULT_PROVIDERS) if s.strip()]
    unknown = [s for s in wanted if s not in PROVIDER_NAMES]
    if unknown:
        raise RepositoryError(f"unknown execution provider(s) {unknown} (known: {', '.join(PROVIDER_NAMES)})")
    names = list(dict.fromkeys(PROVIDER_NAMES[s] for s in wanted))
    return names if CPU in names else [*names, CPU]


def select_providers(requested: list[str] | None = None) -> tuple[list[str], str]:
    """Providers to ask ORT for, best first, and a sentence saying why (CPU is always the last resort)."""
    available = ort.get_available_providers()
    chosen, missing = [], []
    for full in requested_providers(requested):
        (chosen if full in available else missing).append(full)
    if CPU not in chosen:
        chosen.append(CPU)
    reason = f"using {chosen[0]}"
    if missing:
        reason += f"; not in this onnxruntime build ({ort.get_device()}): {', '.join(missing)}"
    return chosen, reason


@dataclass
class RuntimeSettings:
    """How sessions are built; one-to-one with the serve command's flags."""

    providers: list[str] | None = None
    intra_op_threads: int = 0  # 0 = the cores divided among the streams
    precision: str = "auto"  # auto = the fastest candidate that passes the reference check; else pinned
    bf16_hardware: bool | None = None  # None = read /proc/cpuinfo
    timing_size: int = 64  # spatial size of the typical input the candidates are timed on
    # runs of one model in flight at once: 1 = latency mode, >1 = throughput mode; 0 = each model's own
    # config.pbtxt instance_group count (1 in ganserve's exports), resolved when the model loads
    streams: int = 0
    cache_dir: Path | None = None  # warm-start cache of the choices and OpenVINO's compiled models (None = off)
    max_compiled_shapes: int = DEFAULT_MAX_COMPILED_SHAPES  # per session of a shape-compiling provider; 0 = no bound

    def __post_init__(self) -> None:
        if self.precision not in ("auto", *PRECISIONS):
            raise RepositoryError(f"unknown precision {self.precision!r} (auto, {', '.join(PRECISIONS)})")
        if self.streams < 0:
            raise RepositoryError(f"streams must be >= 0, got {self.streams}")
        if self.max_compiled_shapes < 0:
            raise RepositoryError(f"max_compiled_shapes must be >= 0, got {self.max_compiled_shapes}")

    def threads(self) -> int:
        """Threads per run: the flag's, else the cores shared among the streams."""
        return self.intra_op_threads or max(1, (os.cpu_count() or 1) // max(1, self.streams))


ShapeKey = tuple[tuple[str, tuple[int, ...]], ...]


def shape_key(feeds: dict[str, np.ndarray]) -> ShapeKey:
    """Every input's name and full shape (batch axis included): what a shape-compiling provider compiles for."""
    return tuple(sorted((name, tuple(int(d) for d in array.shape)) for name, array in feeds.items()))


@dataclass(eq=False)
class Generation:
    """One ORT session of a runner, the distinct input shapes run on it, and the runs in flight on it."""

    session: ort.InferenceSession | None
    shapes: set[ShapeKey] = field(default_factory=set)
    in_flight: int = 0
    retired: bool = False


class OrtRunner:
    """One model version's ORT session; `run` is the synchronous callable the batcher drives.

    For a provider that compiles per input shape (SHAPE_COMPILING) the session is bounded to
    `settings.max_compiled_shapes` distinct input shapes by generations: an ORT session cannot forget one shape, and
    a second session duplicates the weights and the provider's compiled model (+65 MiB for cyclegan-ab on OpenVINO),
    so instead of an LRU of sessions, the run that brings shape N+1 builds a fresh session of the same candidate and
    swaps it in; runs already on the old session finish there, and the last one out drops it and trims the C heap
    (glibc malloc_trim) so the memory goes back to the system. The new session starts with that one shape: warming
    the recent ones would cost a whole run each to save only their compile (measured on OpenVINO: a new shape's first
    run is 4-30 ms slower than its next, a run is 5-110 ms at 64-256 px). Rebuilds are counted in `evictions`.
    """

    def __init__(self, path: Path, settings: RuntimeSettings, candidate: Candidate | None = None) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # ORT's graph-cleanup warnings say nothing a user can act on; errors stay
        if candidate is None:
            providers, self.provider_reason = select_providers(settings.providers)
            self.precision = "fp32"
        else:
            path, self.precision = candidate.path, candidate.precision
            providers = [(candidate.provider, _with_threads(candidate, settings.threads()))]
            if candidate.provider != CPU:
                providers.append(CPU)  # ops the first provider lacks run here
            self.provider_reason = f"using {candidate.label}"
        self.path = path
        self._open: Callable[[], ort.InferenceSession] = lambda: ort.InferenceSession(
            str(path), sess_options=options, providers=providers)
        try:
            session = self._open()
        except Exception as exc:  # ORT raises its own exception types for corrupt or unsupported files
            raise RepositoryError(f"{path}: onnxruntime cannot load it ({first_line(exc, 300)})") from exc
        self.provider = session.get_providers()[0]
        if candidate is not None and self.provider != candidate.provider:
            raise RepositoryError(f"{candidate.provider} did not start for {path.name} (onnxruntime fell back to "
                                  f"{self.provider})")
        self.inputs = {i.name: i for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]
        self.tracks_shapes = self.provider in SHAPE_COMPILING
        self.max_shapes = settings.max_compiled_shapes if self.tracks_shapes else 0
        self.evictions = 0
        self.on_evict: Callable[[], None] | None = None  # told after each rebuild (the server counts them)
        self._generation = Generation(session)
        self._lock = threading.Lock()  # guards the generation swap and every generation's shapes and in_flight
        self._rebuild_lock = threading.Lock()  # one rebuild at a time; runs of known shapes go on meanwhile

    @property
    def session(self) -> ort.InferenceSession:
        """The session new runs go to."""
        return self._generation.session

    @property
    def compiled_shapes(self) -> int:
        """Distinct input shapes the current session has compiled (0 for a provider that compiles none per shape)."""
        return len(self._generation.shapes) if self.tracks_shapes else 0

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every output for already-validated feeds (on a fresh session first when the shape bound is hit)."""
        generation = self._enter(shape_key(feeds) if self.tracks_shapes else ())
        try:
            values = generation.session.run(self.output_names, feeds)
        finally:
            self._leave(generation)
        return dict(zip(self.output_names, values))

    def _admit(self, key: ShapeKey) -> Generation | None:
        """The current generation with one more run in flight, if `key` fits its bound (call under `_lock`)."""
        generation = self._generation
        if self.tracks_shapes and key not in generation.shapes:
            if self.max_shapes and len(generation.shapes) >= self.max_shapes:
                return None
            generation.shapes.add(key)
        generation.in_flight += 1
        return generation

    def _enter(self, key: ShapeKey) -> Generation:
        with self._lock:
            generation = self._admit(key)
        return generation if generation is not None else self._rebuild(key)

    def _rebuild(self, key: ShapeKey) -> Generation:
        """Build a fresh session for a shape past the bound, swap it in, and drop the old one once it is idle."""
        with self._rebuild_lock:
            with self._lock:  # another run may have rebuilt while this one waited
                generation = self._admit(key)
            if generation is not None:
                return generation
            try:
                fresh = Generation(self._open(), {key}, in_flight=1)
            except Exception:  # noqa: BLE001  (out of memory, say: serve on the old session past the bound)
                log.exception("%s: could not build a fresh session at the shape bound; the old one takes %s",
                              self.path, key)
                with self._lock:
                    old = self._generation
                    old.shapes.add(key)
                    old.in_flight += 1
                return old
            with self._lock:
                old, self._generation = self._generation, fresh
                old.retired = True
                self.evictions += 1
                idle = self._take_idle(old)
            log.info("%s: %d distinct input shapes compiled; a fresh %s session took over (rebuild %d)", self.path,
                     len(old.shapes), self.provider, self.evictions)
            if self.on_evict is not None:
                self.on_evict()
        if idle is not None:
            del idle  # the last reference: the session is freed here
            trim()
        return fresh

    def _leave(self, generation: Generation) -> None:
        with self._lock:
            generation.in_flight -= 1
            idle = self._take_idle(generation)
        if idle is not None:
            del idle  # the last reference: the session is freed here
            trim()

    @staticmethod
    def _take_idle(generation: Generation) -> ort.InferenceSession | None:
        """A retired generation's session once no run is on it, detached so the caller drops it (under `_lock`)."""
        if not generation.retired or generation.in_flight > 0 or generation.session is None:
            return None
        session, generation.session = generation.session, None
        return session


class RunnerPool:
    """Several sessions of one model version, one per stream, so concurrent runs never share a session.

    One session's concurrent runs do not overlap in the OpenVINO provider, and a run split over every core stalls
    whenever any other thread (the event loop, gRPC, a client) takes one of them; independent sessions with
    cores/streams threads each do not stall each other. `run` hands each call a free session: the batcher has one
    worker per stream, so there is always one.
    """

    def __init__(self, runners: list[OrtRunner]) -> None:
        self.runners = runners
        self._free: queue.SimpleQueue[OrtRunner] = queue.SimpleQueue()
        for runner in runners:
            self._free.put(runner)
        first = runners[0]
        self.inputs, self.output_names, self.provider, self.precision = (
            first.inputs, first.output_names, first.provider, first.precision)

    @property
    def compiled_shapes(self) -> int:
        """Distinct input shapes compiled, summed over the sessions (each is bounded on its own)."""
        return sum(r.compiled_shapes for r in self.runners)

    @property
    def evictions(self) -> int:
        return sum(r.evictions for r in self.runners)

    @property
    def on_evict(self) -> Callable[[], None] | None:
        return self.runners[0].on_evict

    @on_evict.setter
    def on_evict(self, callback: Callable[[], None] | None) -> None:
        for runner in self.runners:
            runner.on_evict = callback

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run on whichever session is free (blocks only if more calls than sessions are in flight)."""
        runner = self._free.get()
        try:
            return runner.run(feeds)
        finally:
            self._free.put(runner)


def stream_runners(choice: Choice, settings: RuntimeSettings) -> OrtRunner | RunnerPool:
    """The chosen runner alone (one stream), or a pool of `settings.streams` sessions of the chosen candidate."""
    if settings.streams <= 1:
        return choice.runner
    extra = [OrtRunner(choice.candidate.path, settings, choice.candidate) for _ in range(settings.streams - 1)]
    return RunnerPool([choice.runner, *extra])


def _with_threads(candidate: Candidate, threads: int) -> dict[str, str]:
    """Provider options plus the thread count where the provider takes its own (OpenVINO)."""
    if candidate.provider == OPENVINO:
        return {**candidate.options, "num_of_threads": str(threads)}
    return dict(candidate.options)


def typical_inputs(runner: OrtRunner, spatial: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch-1 input of the usual serving size, values uniform in [0, 1) (what candidates are timed on)."""
    return typical_feeds(runner.inputs.values(), spatial, seed)


def zero_inputs(runner: OrtRunner, spatial: int = 16) -> dict[str, np.ndarray]:
    """A small all-zero input for warm-up: dynamic axes get 1 (batch) or `spatial` (others)."""
    return typical_feeds(runner.inputs.values(), spatial, None)


def timing_sizes(card: ModelCard | None, settings: RuntimeSettings) -> list[int]:
    """The spatial sizes candidates are timed on: a tile-safe model's tile (the card's, else the timing size); a
    whole-image model at the timing size and 4x it, since it serves whole pictures and the fastest path at 64x64 is
    not always the fastest at 256x256 (measured: pix2pix's CPU provider wins at 64x64 and loses at 256x256)."""
    if card is not None and card.tile_size:
        return [card.tile_size]
    image = card.input_by_role("image") if card is not None else None
    dynamic = image is not None and len(image.shape) == 3 and image.shape[1] <= 0
    if card is not None and not card.tile_safe and dynamic:
        return [settings.timing_size, 4 * settings.timing_size]
    return [settings.timing_size]


def choose_runner(version_dir: Path, card: ModelCard | None, reference: Path | None, settings: RuntimeSettings,
                  providers: list[str] | None = None, precision: str | None = None) -> Choice:
    """Build the candidates this machine supports for one model version and keep the fastest that passes.

    `providers`/`precision` pin this model (config.pbtxt parameters); otherwise the server-wide settings apply.
    A pinned precision that this machine cannot run is an error, never a silent substitute. With
    `settings.cache_dir`, a stored choice under the same key (serving.choice_cache) is re-checked on the reference
    set and served without timing the others; a miss measures every candidate and stores the result.
    """
    asked = providers or settings.providers
    names = requested_providers(asked)
    named_cpu = asked is None or any(p.strip().lower() == "cpu" for p in asked)
    pinned = precision or (settings.precision if settings.precision != "auto" else None)
    bf16 = bool(cpu_info()["bf16_hardware"]) if settings.bf16_hardware is None else settings.bf16_hardware
    files = version_files(version_dir, card.precision if card else "fp32")
    candidates, skipped = list_candidates(files, names, ort.get_available_providers(), bf16, pinned)
    for row in skipped:
        log.info("%s: %s/%s not a candidate: %s", version_dir, row.provider, row.precision, row.reason)
    if not candidates:
        why = "; ".join(f"{t.provider}/{t.precision}: {t.reason}" for t in skipped)
        raise RepositoryError(f"no candidate for precision {pinned or 'any'} on this machine ({why})")
    cases = load_reference_cases(reference)
    sizes = timing_sizes(card, settings)
    pinned_now = pinned is not None
    last_resort = frozenset() if named_cpu else frozenset({CPU})

    def build(c: Candidate) -> OrtRunner:
        return OrtRunner(c.path, settings, c)

    def feeds(r: OrtRunner) -> dict[str, dict[str, np.ndarray]]:
        return {f"{n}x{n}": typical_inputs(r, n) for n in sizes}

    def measure() -> Choice:
        return choose(card, candidates, skipped, cases, build, feeds, pinned=pinned_now, last_resort=last_resort)

    if settings.cache_dir is None:
        return measure()
    cache = ChoiceCache(settings.cache_dir)
    outcome = {"providers": names, "last_resort": sorted(last_resort), "pinned": pinned, "threads": settings.threads(),
               "streams": settings.streams, "timing_sizes": sizes, "bf16_hardware": bf16}
    try:
        material = key_material(candidates, reference, card.to_json() if card else "", outcome)
    except OSError as exc:
        log.warning("%s: choice cache skipped, cannot hash the model files (%s)", version_dir, exc)
        return measure()
    key = key_of(material)
    _openvino_cache(candidates, cache)
    entry = cache.load(key)
    stored = restore(entry, candidates, version_dir) if entry is not None else None
    if stored is not None:
        candidate, table, passed = stored
        choice = reuse(card, candidate, table, cases, build, feeds, pinned=pinned_now, passed=passed)
        if choice is not None:
            log.info("%s: choice cache hit %s (%s)", version_dir, key[:16], cache.entry_path(key))
            choice.cache_key, choice.cached = key, entry
            return choice
    log.info("%s: choice cache miss %s; measuring %d candidate(s)", version_dir, key[:16], len(candidates))
    choice = measure()
    choice.cache_key, choice.cached = key, entry_of(choice, material)
    cache.store(key, choice.cached)
    return choice


def _openvino_cache(candidates: list[Candidate], cache: ChoiceCache) -> None:
    """Point the OpenVINO candidates at the cache's blob folder, so a restart loads compiled models, not compiles.

    The onnxruntime-openvino 1.24.1 wheel ships no OpenVINO IR reader, so there the CPU plugin cannot read its own
    blobs back: it deletes and rewrites them on every load (no gain, no harm measured). Builds with the full
    OpenVINO runtime read them.
    """
    wanted = [c for c in candidates if c.provider == OPENVINO]
    if not wanted:
        return
    try:
        folder = str(cache.openvino_dir)
    except OSError as exc:
        log.warning("OpenVINO model cache off: cannot create it in %s (%s)", cache.root, exc)
        return
    for cand in wanted:
        cand.options["cache_dir"] = folder
