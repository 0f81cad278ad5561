"""The face-aging application's age groups, where both its data (data/faces.py) and its networks
(networks/face_aging.py) may read them without importing each other: the paper's six groups (Antipov et al. 2017)
as served labels, their lower bounds and the ages evaluation draws each group's "true render" at."""

from __future__ import annotations

import math

from ganserve.core.errors import GanserveError

AGE_GROUPS: tuple[str, ...] = ("0-18", "19-29", "30-39", "40-49", "50-59", "60+")
GROUP_LOWER: tuple[int, ...] = (0, 19, 30, 40, 50, 60)
# The age at which a group's "true render" is drawn in evaluation (near each group's middle).
GROUP_CENTRES: tuple[float, ...] = (9.0, 24.0, 35.0, 45.0, 55.0, 70.0)
MAX_AGE = 80.0


def age_group(age: float) -> int:
    """Index of the age group an age (years) falls in."""
    if not math.isfinite(age) or age < 0:
        raise GanserveError(f"age must be a finite number >= 0, got {age!r}")
    return max(i for i, lo in enumerate(GROUP_LOWER) if age >= lo)
