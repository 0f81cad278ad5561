"""What the super-resolution applications share: an SR config naming its generator, and an Application base that
builds whichever registered SR generator the config names and gives it the same data, held-out evaluation,
pictures and ONNX export (LR RGB [0, 1] -> SR RGB [0, 1], clamped).

``srresnet`` (pixel loss) and ``srgan`` (adversarial fine-tune) differ only in their losses, so each subclasses this
base rather than the other: any SR generator trains under either.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ganserve.core.image_metrics import to_uint8
from ganserve.core.pictures import picture_grid
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.calibration import seeded_feeds
from ganserve.training.config import CommonConfig
from ganserve.training.data.images import BUILTIN_TRAIN, SRSource, load_builtin, step_generator, upscale_bicubic
from ganserve.training.applications.sr_eval import (
    HELD_OUT_DESCRIPTION,
    evaluate_sr,
    held_out_hr_crops,
    held_out_lr_crops,
    held_out_pairs,
)
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.specs import network_field
from ganserve.training.objectives.content import PIXEL_LOSSES


@dataclass
class SRConfig(CommonConfig):
    """Settings every SR application shares; the default generator is the paper's SRResNet (16 x 64, batch norm)."""

    scale: int = 4  # 2 or 4 (8 works too); the generator is built for this factor
    # any registered SR generator (it gets ``scale``); e.g. {type: srresnet, blocks: 8, channels: 32}
    generator: dict[str, Any] = network_field("srresnet", blocks=16, channels=64, batch_norm=True, bicubic_skip=False)
    pixel_loss: str = "mse"  # mse | l1
    lr_patch: int = 24  # LR crop side; the HR crop is lr_patch * scale (96 at x4, as in the paper)
    lr: float = 1e-4
    # train with the generator's weights and the batches in channels-last memory order (NHWC strides): oneDNN
    # convolves the paper's SRResNet faster in that order on x86 CPUs (docs/super-resolution.md); the weights and
    # the exported model are the same either way
    channels_last: bool = False


def build_sr_generator(config: SRConfig) -> nn.Module:
    """The SR generator ``config`` names, built for its scale; a clear error when it upscales by another factor."""
    generator = build_network(config.generator, "generator", scale=config.scale)
    built = getattr(generator, "scale", config.scale)
    if built != config.scale:
        raise GanserveError(f"generator {config.generator['type']!r} upscales x{built}, but scale is {config.scale}")
    return generator


def pad_to_multiple(lr: np.ndarray, multiple: int) -> np.ndarray:
    """NCHW padded at the bottom/right to multiples of ``multiple`` as serving pads (reflect; edge where too small)."""
    h, w = lr.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not (ph or pw):
        return lr
    mode = "reflect" if ph < h and pw < w else "edge"
    return np.pad(lr, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


def padded_predictor(predict: Any, multiple: int, scale: int) -> Any:
    """``predict`` on LR of any size for a generator whose input sides must be multiples of ``multiple`` (e.g.
    RRDBNet x2 after pixel-unshuffle): pad as serving does, predict, crop the output back."""
    if multiple <= 1:
        return predict

    def run(lr: np.ndarray) -> np.ndarray:
        h, w = lr.shape[-2:]
        return predict(pad_to_multiple(lr, multiple))[..., : h * scale, : w * scale]

    return run


class SRInference(nn.Module):
    """What gets exported: LR RGB [0,1] NCHW -> SR RGB [0,1] NCHW (generator in eval mode, output clamped)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.generator(lr).clamp(0.0, 1.0)


class SRApplication(Application):
    """Base of the SR applications: generator, data, evaluation (held-out PSNR/SSIM-Y next to bicubic), export.

    Subclasses implement ``build_optimizers`` and ``train_step``.
    """

    config: SRConfig

    def __init__(self, config: SRConfig) -> None:
        super().__init__(config)
        if config.pixel_loss not in PIXEL_LOSSES:
            raise GanserveError(f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {config.pixel_loss!r}")
        if config.lr_patch < 4 or config.batch_size < 1:
            raise GanserveError("lr_patch must be >= 4 and batch_size >= 1")
        self.generator = build_sr_generator(config)
        self.multiple = int(getattr(self.generator, "spatial_multiple", 1))
        if config.lr_patch % self.multiple:
            raise GanserveError(f"lr_patch {config.lr_patch} must be a multiple of the generator's spatial multiple "
                                f"{self.multiple}")
        self.pixel_loss = PIXEL_LOSSES[config.pixel_loss]
        self.source: SRSource | None = None

    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        self.source, data_facts = SRSource.from_config(self.config.data_dir, self.config.scale, self.config.lr_patch)
        self.facts["data"] = data_facts
        self.facts["held_out"] = HELD_OUT_DESCRIPTION
        if self.config.channels_last:
            self.generator.to(memory_format=torch.channels_last)

    def make_batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.source is None:
            raise RuntimeError("setup_training() must run before make_batch()")
        lr, hr = self.source.batch(self.config.batch_size, step_generator(self.config.seed, step, rank))
        if self.config.channels_last:
            lr, hr = (t.contiguous(memory_format=torch.channels_last) for t in (lr, hr))
        return lr, hr

    # -- evaluation and pictures ----------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, lr: np.ndarray) -> np.ndarray:
        was_training = self.generator.training
        self.generator.eval()
        h, w = lr.shape[-2:]
        try:
            lr = pad_to_multiple(lr, self.multiple)
            out = self.generator(torch.from_numpy(lr).to(self.device)).clamp(0.0, 1.0)
        finally:
            self.generator.train(was_training)
        return out[..., : h * self.config.scale, : w * self.config.scale].cpu().numpy()

    def evaluate(self) -> dict[str, float]:
        return evaluate_sr(self._predict, self.config.scale)

    def evaluate_eval_set(self) -> dict[str, float] | None:
        return evaluate_sr(self._predict, self.config.scale, "eval")

    def sample_grid(self) -> np.ndarray:
        s = self.config.scale
        (lr,) = held_out_lr_crops(s, [(4, 32, 32)])
        bic = upscale_bicubic(torch.from_numpy(lr), s).numpy()
        return picture_grid([bic, self._predict(lr), held_out_hr_crops(s, 4, 32, 32)])

    # -- export ------------------------------------------------------------------------------------------
    def demo_examples(self, count: int) -> list[DemoExample]:
        """The held-out photos downscaled by the model's factor (the request), with the original as the truth."""
        examples = []
        for i, (hr, lr) in enumerate(held_out_pairs(self.config.scale)[:count]):
            examples.append(DemoExample(name=f"photo{i}", image=to_uint8(lr[0].transpose(1, 2, 0)), truth=to_uint8(hr)))
        return examples

    def export_spec(self) -> ExportSpec:
        c = self.config
        generator = copy.deepcopy(self.generator).cpu().eval()
        # the same function in the form the runtimes run well (SRResNet: its tail on the pre-shuffle map)
        module = SRInference(generator.for_export() if hasattr(generator, "for_export") else generator).eval()
        small, larger = held_out_lr_crops(c.scale, [(1, 32, 32), (2, 48, 40)])

        def evaluate(predictor: Any) -> dict[str, float]:
            predict = padded_predictor(lambda lr: predictor({"lr": lr})["sr"], self.multiple, c.scale)
            return evaluate_sr(predict, c.scale)

        def calibration() -> Any:
            source = SRSource([load_builtin(e) for e in BUILTIN_TRAIN], c.scale, 32, augment=False)
            return seeded_feeds(lambda gen: {"lr": source.batch(1, gen)[0].numpy()})

        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(small),),
            inputs=[TensorSpec("lr", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=[TensorSpec("sr", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="super_resolution",
            architecture=f"{self.model_name}: {describe_network(self.generator)}",
            scale=c.scale,
            spatial_multiple=self.multiple,
            # SRResNet's eval-mode batch norm is a per-channel affine map: no whole-image statistics; a generator
            # that does take them says so with tile_safe = False
            tile_safe=getattr(self.generator, "tile_safe", True),
            dynamic_spatial=True,
            parity_inputs=[{"lr": small}, {"lr": larger}],
            reference_targets=[{"sr": held_out_hr_crops(c.scale, 1, 32, 32)}, {"sr": held_out_hr_crops(c.scale, 2, 48, 40)}],
            evaluate=evaluate,
            quality_key="psnr_y",
            calibration=calibration,
            card_extra=self._card_extra(),
        )

    def _card_extra(self) -> dict[str, Any]:
        return self.card_facts(
            "RGB in [0, 1] in and out (output clamped)", {"source": "builtin", "train": list(BUILTIN_TRAIN)},
            held_out=HELD_OUT_DESCRIPTION, content_loss=self.run_metrics().get("content_loss"))
