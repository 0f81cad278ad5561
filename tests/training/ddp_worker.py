"""Run by tests under torchrun: a tiny SRGAN trained data-parallel; each rank saves its final weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ganserve.training.trainer import Trainer

TINY_GAN = {"blocks": 1, "channels": 8, "batch_size": 2, "lr_patch": 8, "log_every": 1, "eval_every": 0,
            "sample_every": 0, "ckpt_every": 0, "d_channels": 4, "batch_norm": True}


def main(out: str, steps: int, data_dir: str) -> None:
    torch.set_num_threads(1)
    trainer = Trainer("srgan", {**TINY_GAN, "data_dir": data_dir}, steps=steps, out_dir=out, progress=False)
    batch_lr, _ = trainer.app.make_batch(0, trainer.rank, trainer.world)
    trainer.run()
    torch.save({"state": trainer.app.state_dict(), "first_batch": batch_lr, "world": trainer.world},
               Path(out) / f"rank{trainer.rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
