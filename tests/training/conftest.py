"""Fixtures for training tests: tiny model configs that train in well under a second per step."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # tiny tensors: thread sync costs more than it saves on a shared 2-core box

TINY = {"blocks": 1, "channels": 8, "batch_size": 2, "lr_patch": 8, "log_every": 1, "eval_every": 0,
        "sample_every": 0, "ckpt_every": 0}
TINY_GAN = {**TINY, "d_channels": 4}


@pytest.fixture
def tiny() -> dict:
    """Overrides for a 1-block, 8-channel SRResNet on 8x8 LR crops."""
    return dict(TINY)


@pytest.fixture
def tiny_gan() -> dict:
    """Overrides for a tiny SRGAN (4-channel discriminator)."""
    return dict(TINY_GAN)
