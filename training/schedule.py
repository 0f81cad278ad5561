"""Learning-rate schedules as a factor of the base rate, driven by run progress in [0, 1]."""

from __future__ import annotations

import math

from ganserve.core.errors import GanserveError

SCHEDULES = ("constant", "cosine", "step")


def lr_factor(schedule: str, progress: float, step: int, warmup_steps: int = 0, min_factor: float = 0.0) -> float:
    """Multiplier of the base LR: linear warm-up over ``warmup_steps``, then the named schedule over progress.

    ``step``: halve-and-more the way the SRGAN paper did (x0.1 for the second half of the run).
    """
    if schedule not in SCHEDULES:
        raise GanserveError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    progress = min(max(progress, 0.0), 1.0)
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if schedule == "constant":
        return warm
    if schedule == "step":
        return warm * (1.0 if progress < 0.5 else 0.1)
    return warm * (min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress)))
