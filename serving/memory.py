"""Memory: the limit the server runs under (cgroup v1/v2, the machine), its default budget, and admission by bytes.

`default_budget_bytes` turns the container's limit into a budget; `MemoryBudget` holds requests back (FIFO) until
the bytes they will need fit in it, so a burst of large requests waits instead of getting the process OOM-killed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import AsyncIterator

MIB = 1024 * 1024
MIN_MARGIN_BYTES = 256 * MIB
MARGIN_FRACTION = 10  # percent
# The kernel reports "no limit" in cgroup v1 as the largest page-aligned signed 64-bit value (9223372036854771712);
# anything this large is no limit on any real machine.
UNLIMITED_BYTES = 2**62


def _read_text(path: Path) -> str | None:
    """The file's text, or None where it is missing, unreadable or not text (callers treat that as no limit)."""
    try:
        return path.read_text()
    except (OSError, ValueError):
        return None


def _limit_value(text: str | None) -> int | None:
    """Bytes from a memory.max / memory.limit_in_bytes file; None for "max", huge values, garbage or nothing."""
    if text is None:
        return None
    value = text.strip()
    if not value.isdigit():  # "max", "", "-1", garbage
        return None
    number = int(value)
    return number if 0 < number < UNLIMITED_BYTES else None


def _smallest_on_path(base: Path, cgroup_path: str, filename: str) -> tuple[int, Path] | None:
    """The smallest limit in `filename` at base/cgroup_path and each ancestor up to base itself (nested groups)."""
    parts = PurePosixPath(cgroup_path.strip()).parts
    if not parts or parts[0] != "/" or ".." in parts:
        return None
    found: tuple[int, Path] | None = None
    group = base.joinpath(*parts[1:])
    while True:
        file = group / filename
        limit = _limit_value(_read_text(file))
        if limit is not None and (found is None or limit < found[0]):
            found = (limit, file)
        if group == base:
            return found
        group = group.parent


def container_limit(proc: Path = Path("/proc"),
                    cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str] | None:
    """The smallest cgroup memory limit over this process's groups (v2, v1 or both), with the file it came from."""
    text = _read_text(proc / "self" / "cgroup")
    if text is None:
        return None
    found: list[tuple[int, Path, str]] = []
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        hierarchy, controllers, cgroup_path = fields
        if hierarchy == "0" and controllers == "":
            hit = _smallest_on_path(cgroup_root, cgroup_path, "memory.max")
            version = "v2"
        elif "memory" in controllers.split(","):
            hit = _smallest_on_path(cgroup_root / "memory", cgroup_path, "memory.limit_in_bytes")
            version = "v1"
        else:
            continue
        if hit is not None:
            found.append((hit[0], hit[1], version))
    if not found:
        return None
    limit, file, version = min(found, key=lambda item: item[0])
    return limit, f"cgroup {version} {file}"


def container_limit_bytes(proc: Path = Path("/proc"), cgroup_root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The memory limit this process runs under (smallest cgroup limit), or None where no limit applies."""
    hit = container_limit(proc, cgroup_root)
    return None if hit is None else hit[0]


def machine_memory_bytes(proc: Path = Path("/proc")) -> int:
    """MemTotal from <proc>/meminfo in bytes; where that can't be read (not Linux), the sysconf physical pages."""
    for line in (_read_text(proc / "meminfo") or "").splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if name == "MemTotal" and fields and fields[0].isdigit():
            unit = fields[1] if len(fields) > 1 else ""
            return int(fields[0]) * (1024 if unit == "kB" else 1)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_budget_bytes(proc: Path = Path("/proc"),
                         cgroup_root: Path = Path("/sys/fs/cgroup")) -> tuple[int, str]:
    """The default request memory budget and where it came from: min(container limit, machine memory) less a margin.

    The margin, max(256 MiB, 10%), leaves room for the Python process's own heap, the gRPC/HTTP buffers and the
    kernel's page cache accounting (cgroups charge page cache to the group); the budget is never under half the total.
    """
    machine = machine_memory_bytes(proc)
    container = container_limit(proc, cgroup_root)
    if container is not None and container[0] <= machine:
        total = container[0]
        source = f"container limit {total // MIB} MiB ({container[1]})"
    else:
        total = machine
        larger = "" if container is None else f"; container limit {container[0] // MIB} MiB is larger"
        source = f"machine memory {total // MIB} MiB ({proc / 'meminfo'} MemTotal{larger})"
    fraction = total * MARGIN_FRACTION // 100
    margin, said = (fraction, f"{MARGIN_FRACTION}%") if fraction > MIN_MARGIN_BYTES else (MIN_MARGIN_BYTES, "256 MiB")
    budget = total - margin
    floor = ""
    if budget < total // 2:
        budget, floor = total // 2, ", at least half"
    return budget, f"{source} less {said} margin{floor} = {budget // MIB} MiB"


@dataclass(eq=False)
class _Waiter:
    """One admit() call waiting its turn: its cost, and the future set once its bytes are counted in."""

    cost: int
    future: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MemoryBudget:
    """Admits requests by the bytes they will hold, first come first served, so their sum stays within the limit."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes <= 0:
            raise ValueError(f"memory budget must be positive, not {limit_bytes} bytes")
        self._limit = limit_bytes
        self._in_flight = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        """Bytes admitted and not yet released."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """admit() calls waiting their turn."""
        return sum(not waiter.future.done() for waiter in self._waiters)

    def fits(self, cost: int) -> bool:
        """Whether a request of this cost can ever be admitted (cost within the whole budget)."""
        return 0 <= cost <= self._limit

    @asynccontextmanager
    async def admit(self, cost: int, deadline: float | None = None) -> AsyncIterator[None]:
        """Hold `cost` bytes for the block, waiting in FIFO order; TimeoutError past `deadline` (time.monotonic()).

        ValueError at once for a cost that can never fit. The bytes are released however the block ends.
        """
        await self._acquire(cost, deadline)
        try:
            yield
        finally:
            self._release(cost)

    async def _acquire(self, cost: int, deadline: float | None) -> None:
        """Count `cost` in, now if nobody is waiting and it fits, else once every earlier waiter is in and it fits."""
        if not self.fits(cost):
            raise ValueError(f"a request needing {cost} bytes can never fit a memory budget of {self._limit} bytes")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError("deadline passed before the request was admitted")
        if not self._waiters and self._in_flight + cost <= self._limit:
            self._in_flight += cost
            return
        waiter = _Waiter(cost)
        self._waiters.append(waiter)
        timer = None
        if deadline is not None:
            timer = asyncio.get_running_loop().call_later(max(0.0, deadline - time.monotonic()), self._expire, waiter)
        try:
            await waiter.future
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(cost)  # admitted just as it was cancelled: give the bytes back
            else:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                self._wake()  # it may have been the head holding the others back
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, waiter: _Waiter) -> None:
        """The deadline passed while the waiter was still queued."""
        if not waiter.future.done():
            waiter.future.set_exception(TimeoutError("deadline passed while waiting for memory"))

    def _release(self, cost: int) -> None:
        self._in_flight -= cost
        self._wake()

    def _wake(self) -> None:
        """Admit waiters from the head of the queue while they fit; a head that does not fit holds the rest back."""
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():  # expired or cancelled; its admit() is on its way out
                self._waiters.popleft()
                continue
            if self._in_flight + head.cost > self._limit:
                return
            self._waiters.popleft()
            self._in_flight += head.cost
            head.future.set_result(None)
