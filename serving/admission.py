"""What one request costs in memory before it runs (the cost model itself: ganserve.core.memory_cost)."""

from __future__ import annotations

import math

import numpy as np

from ganserve.core.memory_cost import CostModel


def mib(n: int) -> str:
    """Bytes as MiB for messages."""
    return f"{math.ceil(n / 2**20):,} MiB"


def infer_cost(card, inputs: dict[str, np.ndarray], cost: CostModel) -> tuple[int, int]:
    """(bytes, input pixels per row) one raw-tensor inference may take: its inputs, its outputs (the inputs' size
    times scale² for an image model) and the working memory at the image input's H x W for every row."""
    held = sum(a.nbytes for a in inputs.values())
    image = card.input_by_role("image") if card is not None else None
    array = inputs.get(image.name) if image is not None else None
    if array is None or array.ndim != 4:
        return held * 2 + cost.working(0), 0
    rows = int(array.shape[0])
    height, width = (array.shape[1], array.shape[2]) if image.layout == "NHWC" else (array.shape[2], array.shape[3])
    pixels = int(height) * int(width)
    return held * (1 + max(1, card.scale) ** 2) + cost.working(pixels, rows), pixels
