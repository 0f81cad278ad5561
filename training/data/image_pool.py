"""The history pool of generated images a CycleGAN discriminator draws from (Shrivastava et al. 2017)."""

from __future__ import annotations

import torch

from ganserve.core.errors import GanserveError


class ImagePool:
    """History of generated images (Shrivastava et al. 2017, used by CycleGAN): the discriminator sees, for each
    new image, with probability 1/2 a stored older one (which the new image replaces) once the pool is full."""

    def __init__(self, size: int = 50) -> None:
        if size < 0:
            raise GanserveError(f"pool size must be >= 0, got {size}")
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch for the discriminator; all randomness comes from ``generator``."""
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
                continue
            if float(torch.rand((), generator=generator)) < 0.5:
                k = int(torch.randint(self.size, (1,), generator=generator))
                out.append(self.images[k].clone())
                self.images[k] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)
