"""Self-ensemble ("x8"): run an image model on the 8 flips and rotations of its input and average the results.

The 8 transforms are the symmetries of a rectangle's pixel grid (the dihedral group of order 8): the identity, the
rotations by 90, 180 and 270 degrees, the two flips and the two transposes. Each acts on the last two axes (H, W)
of an NCHW array; four of them swap H and W. A model that is not exactly equivariant under them (any trained
convolutional network) gives a slightly different answer for each, and the average of the 8 answers, each turned
back by its inverse, is usually better than one pass: a measured gain (PSNR) for 8 times the compute.

Only a model whose output at a pixel depends on that pixel's neighbourhood, not on statistics of the whole image
(its card says ``tile_safe``), and whose output is an image over the same grid (scaled) can be averaged this way.

Torch-free: serving (which pads, tiles and batches each transformed input) and export (which measures the gain on
held-out images) share it. A predictor maps a (N, C, h, w) input to a (N, C', h * scale, w * scale) output, or to a
larger one that `self_ensemble` crops (padding the caller added at the bottom/right), and may be async.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import numpy as np

PASSES = 8  # the eight transforms
# Names in index order: k rotations by 90 degrees counter-clockwise, then the same after a left-right flip.
NAMES = ("identity", "rot90", "rot180", "rot270", "flip", "flip-rot90", "flip-rot180", "flip-rot270")
ALLOWED = (0, 1, PASSES)  # request values: 0 or 1 = one pass, 8 = the eight transforms

ArrayPredictor = Callable[[np.ndarray], "np.ndarray | Awaitable[np.ndarray]"]
Offload = Callable[[Callable[[], Any]], Awaitable[Any]]


def _check(x: np.ndarray, k: int) -> None:
    if x.ndim < 2:
        raise ValueError(f"a dihedral transform needs an array with (H, W) as its last axes, got shape {x.shape}")
    if not 0 <= k < PASSES:
        raise ValueError(f"transform index must be 0..{PASSES - 1}, got {k}")


def transform(x: np.ndarray, k: int) -> np.ndarray:
    """Transform ``k`` (0..7, see NAMES) of ``x`` over its last two axes: k % 4 quarter turns counter-clockwise,
    after a left-right flip when k >= 4 (a view, not a copy)."""
    _check(x, k)
    if k >= 4:
        x = np.flip(x, axis=-1)
    return np.rot90(x, k % 4, axes=(-2, -1))


def inverse(y: np.ndarray, k: int) -> np.ndarray:
    """Undo transform ``k``: ``inverse(transform(x, k), k)`` equals ``x`` exactly (a view, not a copy)."""
    _check(y, k)
    y = np.rot90(y, -(k % 4), axes=(-2, -1))
    return np.flip(y, axis=-1) if k >= 4 else y


def swaps_sides(k: int) -> bool:
    """Whether transform ``k`` swaps H and W (the odd number of quarter turns)."""
    return k % 2 == 1


def check_passes(passes: int) -> int:
    """The number of passes a request's ``ensemble`` value asks for (1 or 8); ValueError naming the allowed values."""
    if passes not in ALLOWED:
        raise ValueError(f"ensemble must be 0 or 1 (off) or {PASSES} (the eight flips and rotations), got {passes}")
    return PASSES if passes == PASSES else 1


async def self_ensemble(x: np.ndarray, predict: ArrayPredictor, scale: int = 1, passes: int = PASSES,
                        offload: Offload | None = None) -> np.ndarray:
    """The float32 average of ``predict`` over the first ``passes`` transforms of ``x`` (N, C, H, W), each output
    cropped to its transformed input's size times ``scale`` (dropping what the caller padded at the bottom/right)
    before it is turned back, so padding never lands on the wrong side. ``predict`` may be sync or async; the inputs
    are run one after another, so only one pass's output and the float accumulator are held at a time. ``offload``
    (e.g. asyncio.to_thread) runs the whole-array steps (copying a turned input, adding a turned-back output) so
    that an event loop is not blocked by them; None runs them in place."""
    if x.ndim != 4:
        raise ValueError(f"self-ensemble needs an NCHW array, got shape {x.shape}")
    if not 1 <= passes <= PASSES:
        raise ValueError(f"passes must be 1..{PASSES}, got {passes}")

    async def step(work: Callable[[], Any]) -> Any:
        return await offload(work) if offload is not None else work()

    total: np.ndarray | None = None
    for k in range(passes):
        moved = await step(lambda: np.ascontiguousarray(transform(x, k)))
        result = predict(moved)
        if inspect.isawaitable(result):
            result = await result
        y = np.asarray(result)
        h, w = moved.shape[2] * scale, moved.shape[3] * scale
        del moved
        if y.ndim != 4 or y.shape[2] < h or y.shape[3] < w:
            raise ValueError(f"pass {k} ({NAMES[k]}): output {y.shape} is smaller than (N, C, {h}, {w})")
        total = await step(lambda: _added(total, inverse(y[:, :, :h, :w], k), k))
        del y, result
    assert total is not None  # passes >= 1
    return await step(lambda: np.divide(total, np.float32(passes), out=total))


def _added(total: np.ndarray | None, back: np.ndarray, k: int) -> np.ndarray:
    """``total`` + ``back`` in place (a float32 copy of ``back`` when there is no total yet)."""
    if total is None:
        return back.astype(np.float32, copy=True)
    if back.shape != total.shape:
        raise ValueError(f"pass {k} ({NAMES[k]}): output {back.shape} turned back differs from {total.shape}")
    total += back
    return total


def run_sync(coroutine: Coroutine[Any, Any, np.ndarray]) -> np.ndarray:
    """The result of a `self_ensemble` whose predictor is synchronous, without an event loop (such a coroutine
    never suspends); TypeError when the predictor awaited something (await it instead)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise TypeError("the predictor awaited something: await self_ensemble(...) instead of run_sync")


def self_ensemble_sync(x: np.ndarray, predict: Callable[[np.ndarray], np.ndarray], scale: int = 1,
                       passes: int = PASSES) -> np.ndarray:
    """`self_ensemble` for a synchronous predictor, called from plain (non-async) code."""
    return run_sync(self_ensemble(x, predict, scale, passes))
