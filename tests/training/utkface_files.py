"""A folder of rendered faces under UTKFace file names (age_gender_race_date.jpg), for the tests that read one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ganserve.training.data.faces import identity, render, scene


def write_utkface_folder(folder: str | Path, pool: str, count: int, seed: int = 0, size: int = 64) -> list[Path]:
    """Render ``count`` faces of ``pool`` at random ages and save them under UTKFace names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    r = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        age = int(r.integers(1, 80))
        img = render(identity(pool, i), float(age), scene(pool, i, int(r.integers(1000))), size)
        path = folder / f"{age}_{int(r.integers(2))}_{int(r.integers(5))}_{20170101000000000 + i}.jpg"
        Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    return paths
