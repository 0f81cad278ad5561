"""argparse types for numeric flags: range-checked at parse time, so a bad value is one line and exit code 2.

``p.add_argument("--port", type=port())`` turns ``--port 99999`` into
``ganserve serve: error: argument --port: must be 0..65535, got 99999`` before anything runs (gRPC would otherwise
take the port modulo 65536 and listen somewhere else). Every command module uses these rather than ``type=int``.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

PORT_MAX = 65535
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _named(fn: Callable, name: str) -> Callable:
    fn.__name__ = name  # argparse names the type in some of its own messages
    return fn


def integer(low: int | None = None, high: int | None = None, note: str = "") -> Callable[[str], int]:
    """An int in [low, high] (either end open when None); ``note`` is added to the error, e.g. "(0 = no tiling)"."""
    if low is not None and high is not None:
        bound = f"{low}..{high}"
    elif low is not None:
        bound = f">= {low}"
    elif high is not None:
        bound = f"<= {high}"
    else:
        bound = "an integer"
    rule = f"must be {bound}" + (f" {note}" if note else "")

    def parse(text: str) -> int:
        value = _parse_int(text)
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        return value

    return _named(parse, "integer")


def number(low: float | None = None, *, above: float | None = None, high: float | None = None,
           note: str = "") -> Callable[[str], float]:
    """A finite float >= ``low`` (or > ``above``), <= ``high`` when given."""
    parts = []
    if low is not None:
        parts.append(f">= {low:g}")
    if above is not None:
        parts.append(f"> {above:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    rule = "must be " + (" and ".join(parts) or "a finite number") + (f" {note}" if note else "")

    def parse(text: str) -> float:
        value = _parse_float(text)
        if ((low is not None and value < low) or (above is not None and value <= above)
                or (high is not None and value > high)):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return _named(parse, "number")


def count(low: int = 1, note: str = "") -> Callable[[str], int]:
    """A whole number >= ``low`` (threads, streams, batch and queue sizes, requests, tile sizes), at most int32."""
    rule = f"must be >= {low}" + (f" {note}" if note else "")

    def parse(text: str) -> int:
        value = _parse_int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"{rule}, got {value}")
        if value > INT32_MAX:
            raise argparse.ArgumentTypeError(f"must be at most {INT32_MAX}, got {value}")
        return value

    return _named(parse, "count")


def duration(*, positive: bool = False, note: str = "") -> Callable[[str], float]:
    """A finite duration: >= 0, or > 0 with ``positive``."""
    return number(above=0.0, note=note) if positive else number(0.0, note=note)


def port(off: bool = False) -> Callable[[str], int]:
    """A TCP port 0..65535 (0 = any free one); with ``off``, -1 too (the listener is not started)."""
    low = -1 if off else 0

    def parse(text: str) -> int:
        value = _parse_int(text)
        if not low <= value <= PORT_MAX:
            raise argparse.ArgumentTypeError(
                f"must be 0..{PORT_MAX}" + (" (or -1 = off)" if off else "") + f", got {value}")
        return value

    return _named(parse, "port")


def address(text: str) -> str:
    """HOST:PORT as gRPC takes it; a trailing :PORT (digits) must be 1..65535. Other target forms pass unchanged."""
    head, sep, tail = text.rpartition(":")
    if sep and head and tail.isdigit() and not 1 <= int(tail) <= PORT_MAX:
        raise argparse.ArgumentTypeError(f"port must be 1..{PORT_MAX}, got {text!r}")
    if not text.strip():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got an empty string")
    return text


def int_list(low: int = 1) -> Callable[[str], list[int]]:
    """Comma-separated integers, each >= ``low`` (sizes, batches, concurrencies)."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        if min(values) < low or max(values) > INT32_MAX:
            raise argparse.ArgumentTypeError(f"each must be >= {low}, got {text!r}")
        return values

    return _named(parse, "int_list")
