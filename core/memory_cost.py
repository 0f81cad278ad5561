"""The memory cost model of a served model version: working memory of one run = base + per_pixel x input pixels.

Measured for one (provider, precision) on a fresh session: the model runs on two input sizes and the process's peak
RSS growth over each run is read (Linux: VmHWM, reset through /proc/self/clear_refs, after handing the C heap's free
memory back), the line through the two points is fitted and ``SAFETY`` times it kept. Export measures it for the
providers the export machine has and stores it in the model card (``memory``, keyed ``Provider/precision``); the
server uses the card's figure for the candidate it chose, measures at load where the card has none, and falls back
to ``default_cost`` (a deliberately generous rule, docs/security.md) where nothing can be measured. Torch-free: both
export and serving use it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

SAFETY = 1.5  # measured working memory is multiplied by this
PROBE_SIDES = (96, 160)  # input sides the cost is measured on at load (not the timing sizes, so not yet compiled)
MIN_BASE_BYTES = 16 * 2**20
DEFAULT_BASE_BYTES = 64 * 2**20
DEFAULT_BYTES_PER_PIXEL = 2048  # per input pixel and per unit of scale² when nothing was measured
_PROC = Path("/proc/self")
_LIBC = None  # ctypes handle of the C library once looked up (False where it has no malloc_trim)


@dataclass(frozen=True)
class CostModel:
    """Working memory of one network run: base + per_pixel x input pixels (batch 1)."""

    base_bytes: int
    bytes_per_pixel: float
    source: str

    def working(self, pixels: int, rows: int = 1) -> int:
        """Peak working bytes of one run of `rows` inputs of `pixels` input pixels each."""
        return int(self.base_bytes + self.bytes_per_pixel * pixels * max(1, rows))

    def to_dict(self) -> dict[str, object]:
        """The card's form of this model."""
        return {"base_bytes": self.base_bytes, "bytes_per_pixel": round(self.bytes_per_pixel, 3), "source": self.source}

    @classmethod
    def from_card(cls, memory: dict, provider: str, precision: str, origin: str = "model card") -> "CostModel | None":
        """The card's figure for (provider, precision), or None when the card has none (or a malformed one); the
        server's choice cache keeps a figure it measured in the same form (`origin` names where it came from)."""
        entry = memory.get(card_key(provider, precision)) if isinstance(memory, dict) else None
        try:
            return cls(int(entry["base_bytes"]), float(entry["bytes_per_pixel"]), f"{origin}: {entry['source']}")
        except (TypeError, KeyError, ValueError):
            return None

    def largest_side(self, budget: int, other: Callable[[int], int] = lambda side: 0) -> int:
        """The largest square input side whose working memory plus `other(side)` fits `budget` (0 if none)."""
        lo, hi = 0, 1 << 16
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.working(mid * mid) + other(mid) <= budget:
                lo = mid
            else:
                hi = mid - 1
        return lo


def probe_sides(multiple: int = 1) -> tuple[int, int]:
    """The two probe sides on the model's spatial multiple (rounded up, and apart)."""
    m = max(1, multiple)
    first = -(-PROBE_SIDES[0] // m) * m
    return first, max(-(-PROBE_SIDES[1] // m) * m, first + m)


def card_key(provider: str, precision: str) -> str:
    """How the card's ``memory`` names a (provider, precision): "CPUExecutionProvider/fp32"."""
    return f"{provider}/{precision}"


def default_cost(scale: int) -> CostModel:
    """The stated fallback: 64 MiB + 2 KiB x scale² per input pixel (e.g. 32 KiB per pixel at x4)."""
    return CostModel(DEFAULT_BASE_BYTES, DEFAULT_BYTES_PER_PIXEL * max(1, scale) ** 2, "default (not measured)")


def _peak_rss() -> int | None:
    try:
        for line in (_PROC / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def trim() -> None:
    """Hand the C heap's free memory back to the system (glibc malloc_trim), so a peak measured next is new memory,
    not memory an earlier run freed and the allocator kept."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _reset_peak() -> bool:
    trim()
    try:
        (_PROC / "clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss() -> int:
    for line in (_PROC / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run_peak(run: Callable[[dict[str, np.ndarray]], object], feeds: dict[str, np.ndarray]) -> int | None:
    """Peak RSS growth of the process over one call of `run` (None where it cannot be read)."""
    if not _reset_peak():
        return None
    before = _rss()
    run(feeds)
    peak = _peak_rss()
    return None if peak is None else max(0, peak - before)


def measure_cost(run: Callable[[dict[str, np.ndarray]], object], feeds_at: Callable[[int], dict[str, np.ndarray]],
                 scale: int, sides: tuple[int, int] = PROBE_SIDES) -> CostModel:
    """Fit base + per_pixel x pixels through the peaks of one run at each of two sides, times SAFETY."""
    peaks = []
    for side in sides:
        peak = run_peak(run, feeds_at(side))
        if peak is None:
            return default_cost(scale)
        peaks.append(peak)
    (s1, s2), (p1, p2) = sides, peaks
    per_pixel = max(0.0, (p2 - p1) / (s2 * s2 - s1 * s1))
    # the slope between two small probes is noisy (a lazily created pool or buffer lands in one of them): never
    # below the larger probe's whole peak per pixel, as if nothing of it were fixed
    per_pixel = max(per_pixel, p2 / (s2 * s2))
    base = max(MIN_BASE_BYTES, p1 - per_pixel * s1 * s1)
    return CostModel(int(SAFETY * base), SAFETY * per_pixel,
                     f"measured: {p1 / 2**20:.0f} MiB at {s1}², {p2 / 2**20:.0f} MiB at {s2}², x{SAFETY}")


