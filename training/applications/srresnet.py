"""``srresnet``: an SR generator trained alone on a pixel loss (MSE as in Ledig et al. 2017, or L1).

The generator is whichever registered SR network the config names (SRResNet by default); evaluation, pictures and
export are the SR base's (``models/sr_base.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ganserve.training.applications.sr_base import SRApplication, SRConfig
from ganserve.training.registry import register_model


@dataclass
class SRResNetConfig(SRConfig):
    """Pixel-loss pre-training; defaults are the paper's network (16 blocks, 64 channels, batch norm, MSE)."""


@register_model("srresnet", SRResNetConfig)
class SRResNetApp(SRApplication):
    """An SR generator trained on a pixel loss; evaluation is held-out PSNR/SSIM-Y next to bicubic."""

    config: SRResNetConfig

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"g": self.adam(self.generator, self.config.lr)}

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        lr, hr = (t.to(self.device) for t in batch)
        loss = self.pixel_loss(self.generator(lr), hr)
        self.optimize("g", loss)
        return {"loss_pix": float(loss.detach())}
