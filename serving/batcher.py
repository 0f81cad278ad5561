"""Dynamic batching per model: gather same-shape requests into one ONNX Runtime run, with a bounded queue.

Why: on a small CPU one run of batch N costs less than N runs of batch 1 (per-run overhead is amortised and the
convolution kernels get more parallel work), so a server that merges concurrent requests serves more per second.

How it works (all on the asyncio loop; only ``run`` executes in a thread):

* ``submit`` validates the request, refuses it at once when the queue is full or the batcher is closed, and parks
  it in the queue of its *shape key* (every input's ``shape[1:]`` and dtype). Only same-key requests share a run.
* ``workers`` worker coroutines each take a batch when they are free: among the shape groups that are *ready*
  they pick the one whose oldest request has waited longest. A group is ready when its queued rows fill
  ``max_batch_size``, when a prefix of it has a preferred batch size, or when its oldest request has waited
  ``max_queue_delay_us``. Requests larger than ``max_batch_size`` rows run alone.
* Inputs are concatenated along axis 0, ``run`` executes in the executor, and every output is split back to each
  caller by its row count.
* A request whose deadline passes while queued is removed and answered with ``DeadlineExceededError``; it never
  reaches ``run``. A request whose caller is cancelled while queued is removed too. Once a request is in a
  running batch its result is delivered regardless of the deadline (the run cannot be interrupted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

RunFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
ShapeKey = tuple[tuple[str, tuple[int, ...], str], ...]


class QueueFullError(Exception):
    """The model's queue holds ``max_queue_size`` requests already; the server answers RESOURCE_EXHAUSTED."""


class DeadlineExceededError(Exception):
    """The request's deadline passed before it was run; it was dropped (server: DEADLINE_EXCEEDED)."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and accepts no more work (server: UNAVAILABLE)."""


class BatchObserver(Protocol):
    """Receives one call per executed batch, so the server can export batch-size and queue-time metrics."""

    def on_batch(self, model: str, batch_rows: int, queue_seconds: list[float]) -> None: ...


@dataclass
class BatchingConfig:
    """Batching knobs, mapped from config.pbtxt's dynamic_batching and the server's CLI flags."""

    max_batch_size: int = 8  # rows per ORT run (requests may carry >1 row each)
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 2000  # 0 = run as soon as a worker is free (no waiting)
    max_queue_size: int = 64  # pending requests; beyond that submit raises QueueFullError at once
    enabled: bool = True  # False = every request runs alone (still through the same queue/worker)
    workers: int = 1  # concurrent runs of this model (threads); 1 suits a 2-core machine

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_us must be >= 0, got {self.max_queue_delay_us}")
        if self.max_queue_size < 1:
            raise ValueError(f"max_queue_size must be >= 1, got {self.max_queue_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        bad = [s for s in self.preferred_batch_sizes if not 1 <= s <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} outside 1..max_batch_size ({self.max_batch_size})")


@dataclass(eq=False)
class _Request:
    """One queued call: its inputs, row count, timing and the future its caller awaits."""

    inputs: dict[str, np.ndarray]
    rows: int
    key: ShapeKey
    enqueued: float
    deadline: float | None
    future: asyncio.Future[dict[str, np.ndarray]]
    taken: bool = False


def _shape_key(inputs: dict[str, np.ndarray]) -> ShapeKey:
    """Requests with equal keys can be concatenated along axis 0."""
    return tuple(sorted((name, tuple(a.shape[1:]), a.dtype.str) for name, a in inputs.items()))


def _validate(inputs: dict[str, np.ndarray]) -> int:
    """Check the request's tensors share one leading batch axis n >= 1 and return n."""
    if not inputs:
        raise ValueError("request has no inputs")
    rows: set[int] = set()
    for name, array in inputs.items():
        if not isinstance(array, np.ndarray):
            raise ValueError(f"input {name!r} is {type(array).__name__}, not a numpy array")
        if array.ndim < 1 or array.shape[0] < 1:
            raise ValueError(f"input {name!r} has shape {array.shape}; a leading batch axis of size >= 1 is needed")
        rows.add(array.shape[0])
    if len(rows) != 1:
        raise ValueError(f"inputs disagree on the batch size: {sorted(rows)}")
    return rows.pop()


class Batcher:
    """Merges concurrent requests for one model into batched runs; see the module docstring."""

    def __init__(
        self,
        run: RunFn,
        config: BatchingConfig,
        name: str = "",
        observer: BatchObserver | None = None,
        executor: Executor | None = None,
    ) -> None:
        self._run = run
        self.config = config
        self.name = name
        self._observer = observer
        self._own_executor = executor is None
        self._executor = executor if executor is not None else ThreadPoolExecutor(config.workers, f"batcher-{name}")
        self._groups: dict[ShapeKey, deque[_Request]] = {}
        self._pending = 0
        self._closed = False
        self._wakeup = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []

    def queue_depth(self) -> int:
        """Requests waiting in the queue (not counting those in a running batch)."""
        return self._pending

    async def submit(self, inputs: dict[str, np.ndarray], deadline: float | None = None) -> dict[str, np.ndarray]:
        """Queue one request and return its rows of every output; ``deadline`` is absolute time.monotonic()."""
        if self._closed:
            raise BatcherClosedError(f"model {self.name!r} is shutting down")
        rows = _validate(inputs)
        now = time.monotonic()
        if deadline is not None and deadline <= now:
            raise DeadlineExceededError(f"deadline passed before model {self.name!r} queued the request")
        if self._pending >= self.config.max_queue_size:
            raise QueueFullError(f"model {self.name!r} queue is full ({self.config.max_queue_size} requests)")
        self._start_workers()
        loop = asyncio.get_running_loop()
        request = _Request(inputs, rows, _shape_key(inputs), now, deadline, loop.create_future())
        self._groups.setdefault(request.key, deque()).append(request)
        self._pending += 1
        self._notify()
        try:
            if deadline is not None:
                await asyncio.wait({request.future}, timeout=max(0.0, deadline - time.monotonic()))
                if not request.future.done() and not request.taken:
                    self._remove(request)
                    raise DeadlineExceededError(f"deadline passed while queued for model {self.name!r}")
            return await request.future
        except asyncio.CancelledError:
            if not request.taken:
                self._remove(request)
            raise

    @property
    def closed(self) -> bool:
        """Whether close() was called: no new request is accepted."""
        return self._closed

    async def close(self, drain: bool = True) -> None:
        """Stop accepting work; with ``drain`` finish everything accepted, else fail what is still queued."""
        self._closed = True
        if not drain:
            for group in self._groups.values():
                self._fail(list(group), BatcherClosedError(f"model {self.name!r} shut down"))
            self._groups.clear()
            self._pending = 0
        self._notify()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        if self._own_executor:
            self._executor.shutdown(wait=True)

    def _start_workers(self) -> None:
        """Create the worker tasks on first use, inside the running loop."""
        if self._workers:
            return
        self._workers = [
            asyncio.create_task(self._worker(), name=f"batcher-{self.name}-{i}") for i in range(self.config.workers)
        ]

    def _notify(self) -> None:
        self._wakeup.set()

    def _remove(self, request: _Request) -> None:
        """Take a still-queued request out of its group (deadline passed or caller gone)."""
        group = self._groups.get(request.key)
        if group is None or request.taken:
            return
        try:
            group.remove(request)
        except ValueError:
            return
        self._pending -= 1
        if not group:
            del self._groups[request.key]

    def _drop_stale(self, now: float) -> None:
        """Drop queued requests whose deadline has passed (answering them) or whose caller is gone; never run them."""
        for key in list(self._groups):
            group = self._groups[key]
            stale = [r for r in group if r.future.done() or (r.deadline is not None and r.deadline <= now)]
            for request in stale:
                group.remove(request)
                self._pending -= 1
                if not request.future.done():
                    request.future.set_exception(
                        DeadlineExceededError(f"deadline passed while queued for model {self.name!r}")
                    )
            if not group:
                del self._groups[key]

    def _batch_prefix(self, group: deque[_Request]) -> tuple[int, bool]:
        """How many leading requests of ``group`` form the next batch, and whether it may run now (not at delay)."""
        cfg = self.config
        if not cfg.enabled or group[0].rows >= cfg.max_batch_size:
            return 1, True
        total, count, preferred = 0, 0, 0
        for request in group:
            if total + request.rows > cfg.max_batch_size:
                return count, True  # the next request does not fit: this batch is as full as it gets
            total += request.rows
            count += 1
            if total in cfg.preferred_batch_sizes:
                preferred = count
        if total == cfg.max_batch_size:
            return count, True
        if preferred:
            return preferred, True
        return count, False

    def _take_batch(self, now: float) -> list[_Request] | float | None:
        """The next batch to run, or the monotonic time to re-check at, or None when nothing is queued."""
        self._drop_stale(now)
        delay = self.config.max_queue_delay_us / 1e6
        best: tuple[float, ShapeKey, int] | None = None
        wake_at: float | None = None
        for key, group in self._groups.items():
            count, full = self._batch_prefix(group)
            oldest = group[0].enqueued
            if full or self._closed or now >= oldest + delay:
                if best is None or oldest < best[0]:
                    best = (oldest, key, count)
            else:
                wake_at = oldest + delay if wake_at is None else min(wake_at, oldest + delay)
        if best is None:
            return wake_at
        _, key, count = best
        group = self._groups[key]
        batch = [group.popleft() for _ in range(count)]
        if not group:
            del self._groups[key]
        self._pending -= count
        for request in batch:
            request.taken = True
        return batch

    async def _next_batch(self) -> list[_Request] | None:
        """Wait until a batch is ready; None once the batcher is closed and the queue is empty."""
        while True:
            now = time.monotonic()
            outcome = self._take_batch(now)
            if isinstance(outcome, list):
                return outcome
            if outcome is None and self._closed:
                return None
            self._wakeup.clear()
            timeout = None if outcome is None else max(0.0, outcome - now)
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            except TimeoutError:
                pass

    async def _worker(self) -> None:
        """Run batches until closed and drained."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if batch is None:
                return
            self._report(batch)
            try:
                feeds = self._concatenate(batch)
                outputs = await loop.run_in_executor(self._executor, self._run, feeds)
                self._split(batch, outputs)
            except asyncio.CancelledError:
                self._fail(batch, BatcherClosedError(f"model {self.name!r} stopped during a run"))
                raise
            except Exception as exc:  # the run failed: every caller in the batch gets the error
                self._fail(batch, exc)

    @staticmethod
    def _fail(batch: list[_Request], exc: BaseException) -> None:
        """Answer every still-waiting request of ``batch`` with ``exc``."""
        for request in batch:
            if not request.future.done():
                request.future.set_exception(exc)

    def _report(self, batch: list[_Request]) -> None:
        """Tell the observer the batch's rows and each request's time in the queue."""
        if self._observer is None:
            return
        now = time.monotonic()
        try:
            self._observer.on_batch(self.name, sum(r.rows for r in batch), [now - r.enqueued for r in batch])
        except Exception:
            log.exception("batch observer failed for model %r", self.name)

    @staticmethod
    def _concatenate(batch: list[_Request]) -> dict[str, np.ndarray]:
        """Stack the requests' inputs along axis 0 (a single request passes through without a copy)."""
        if len(batch) == 1:
            return batch[0].inputs
        return {name: np.concatenate([r.inputs[name] for r in batch], axis=0) for name in batch[0].inputs}

    def _split(self, batch: list[_Request], outputs: dict[str, np.ndarray]) -> None:
        """Give each request its rows of every output."""
        total = sum(r.rows for r in batch)
        for out_name, array in outputs.items():
            if np.ndim(array) < 1 or array.shape[0] != total:
                raise ValueError(
                    f"model {self.name!r} output {out_name!r} has shape {np.shape(array)}; "
                    f"expected a leading axis of {total} rows"
                )
        start = 0
        for request in batch:
            stop = start + request.rows
            if not request.future.done():
                request.future.set_result({out: array[start:stop] for out, array in outputs.items()})
            start = stop
