"""Load drivers: a closed-loop async driver for served paths and a timed loop for in-process baselines.

Both return the same `Stats`, so torch, onnxruntime and every served path are summarised identically.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable

import numpy as np
import psutil


@dataclass
class Stats:
    """Latency percentiles (ms) and throughput of one configuration; `requests` is how many the figures rest on."""

    path: str
    size: int
    batch: int
    concurrency: int
    requests: int
    errors: int
    wall_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_rps: float
    images_per_s: float
    cpu_percent: float | None = None  # CPU time of the measured process(es) over wall time (200 = both cores)
    peak_rss_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(path: str, size: int, batch: int, concurrency: int, latencies_s: list[float], errors: int, wall_s: float,
              cpu_percent: float | None = None, peak_rss_mb: float | None = None) -> Stats:
    lat = np.asarray(latencies_s, dtype=np.float64) * 1e3
    if lat.size == 0:
        raise RuntimeError(f"{path}: no successful requests ({errors} errors)")
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    rps = lat.size / wall_s
    return Stats(path, size, batch, concurrency, int(lat.size), errors, wall_s, float(p50), float(p90), float(p99),
                 float(lat.mean()), rps, rps * batch, cpu_percent, peak_rss_mb)


class ProcessMonitor:
    """CPU use and peak RSS of a set of processes (a server and its children) over a measured window."""

    def __init__(self, pids: list[int]):
        self.procs = [psutil.Process(p) for p in pids]

    def _cpu(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
                for c in p.children(recursive=True):
                    ct = c.cpu_times()
                    total += ct.user + ct.system
            except psutil.Error:
                pass
        return total

    def start(self) -> None:
        self._t0, self._c0 = time.perf_counter(), self._cpu()

    def stop(self) -> tuple[float, float]:
        """(CPU percent over the window, peak RSS in MB since process start) ."""
        wall = time.perf_counter() - self._t0
        cpu = 100.0 * (self._cpu() - self._c0) / wall if wall > 0 else 0.0
        return cpu, self.peak_rss_mb()

    def peak_rss_mb(self) -> float:
        peak = 0
        for p in self.procs:
            try:
                procs = [p, *p.children(recursive=True)]
            except psutil.Error:
                continue
            for q in procs:
                try:
                    with open(f"/proc/{q.pid}/status") as fh:
                        for line in fh:
                            if line.startswith("VmHWM:"):
                                peak += int(line.split()[1]) * 1024
                except OSError:
                    try:
                        peak += q.memory_info().rss
                    except psutil.Error:
                        pass
        return peak / 2**20


async def closed_loop(send: Callable[[], Awaitable[Any]], concurrency: int, requests: int | None = None,
                      duration: float | None = None, warmup: int = 2) -> tuple[list[float], int, float]:
    """Keep `concurrency` requests in flight until `requests` have completed or `duration` seconds have passed.

    Warm-up requests (per worker) run first and are excluded. Returns (latencies in s, error count, wall seconds).
    """
    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    for _ in range(warmup):
        await asyncio.gather(*(send() for _ in range(concurrency)))
    latencies: list[float] = []
    errors = 0
    issued = 0
    t_start = time.perf_counter()
    deadline = t_start + duration if duration is not None else None

    def more() -> bool:
        nonlocal issued
        if requests is not None and issued >= requests:
            return False
        if deadline is not None and time.perf_counter() >= deadline:
            return False
        issued += 1
        return True

    async def worker() -> None:
        nonlocal errors
        while more():
            t0 = time.perf_counter()
            try:
                await send()
            except Exception:  # counted, reported; one failing request must not end the sweep
                errors += 1
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t_start


def timed_loop(fn: Callable[[], Any], requests: int | None = None, duration: float | None = None,
               warmup: int = 2) -> tuple[list[float], float]:
    """Call `fn` back to back (in-process baselines): (latencies in s, wall seconds), warm-up excluded."""
    if requests is None and duration is None:
        raise ValueError("give requests or duration")
    for _ in range(warmup):
        fn()
    latencies: list[float] = []
    t_start = time.perf_counter()
    while True:
        if requests is not None and len(latencies) >= requests:
            break
        if duration is not None and time.perf_counter() - t_start >= duration:
            break
        t0 = time.perf_counter()
        fn()
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - t_start
