"""SRResNet and SRGAN (Ledig et al. 2017, "Photo-Realistic Single Image Super-Resolution Using a GAN").

Two registered applications:
- ``srresnet``: the generator alone, trained on a pixel loss (MSE as in the paper, or L1);
- ``srgan``: the same generator (``init_from`` an srresnet checkpoint) fine-tuned against the SRGAN
  discriminator with content loss (VGG19 phi_5,4 feature MSE when ``vgg_weights`` names a file, else the
  image-gradient fallback, stated in the log and the checkpoint) + adversarial loss (weight 1e-3).
Images are RGB in [0, 1] in and out; the exported module clamps its output to [0, 1].
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.config import CommonConfig
from ganserve.training.data.images import BUILTIN_TRAIN, SRSource, load_builtin, step_generator, upscale_bicubic
from ganserve.core.export_spec import ExportSpec
from ganserve.training.models.sr_eval import (
    HELD_OUT_DESCRIPTION,
    evaluate_sr,
    held_out_pairs,
    held_out_hr_crops,
    held_out_lr_crops,
    picture_grid,
)
from ganserve.training.models.vgg import VGG19_RELU_INDEX, load_vgg19_features
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.content import ContentLoss
from ganserve.training.registry import register_model

PIXEL_LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}
GENERATOR_SHAPE_KEYS = ("scale", "blocks", "channels", "batch_norm", "bicubic_skip")


# -- networks --------------------------------------------------------------------------------------------
def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity (the paper's B residual blocks)."""

    def __init__(self, channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            _norm(channels, batch_norm),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm),
            _norm(channels, batch_norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """The SRGAN generator: 9x9 head, residual blocks, long skip, PixelShuffle x2 stages, 9x9 tail.

    With ``bicubic_skip`` the network predicts a residual over the bicubic upscale of its input (a global skip, as
    in VDSR): it starts at the bicubic baseline instead of having to learn it, which matters on a 2-core budget.
    The paper's SRResNet has no such skip (``bicubic_skip=False``, the default).
    """

    def __init__(self, scale: int = 4, blocks: int = 16, channels: int = 64, batch_norm: bool = True,
                 bicubic_skip: bool = False) -> None:
        super().__init__()
        self.scale, self.bicubic_skip = scale, bicubic_skip
        if scale not in (2, 4, 8):
            raise GanserveError(f"scale must be 2, 4 or 8, got {scale}")
        if blocks < 1 or channels < 1:
            raise GanserveError(f"blocks and channels must be positive (got {blocks}, {channels})")
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*[ResidualBlock(channels, batch_norm) for _ in range(blocks)])
        self.body_tail = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=not batch_norm), _norm(channels, batch_norm)
        )
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(channels)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        if bicubic_skip:  # start close to the bicubic baseline: a small residual
            with torch.no_grad():
                self.tail.weight.mul_(0.1)
                self.tail.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.head(x)
        out = self.tail(self.upsample(h + self.body_tail(self.body(h))))
        if self.bicubic_skip:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out


class SRDiscriminator(nn.Module):
    """The SRGAN discriminator: 8 conv layers (64..512 channels, strided every other), BN, LeakyReLU, 2 dense.

    An adaptive average pool to 6x6 (the paper's map size for 96x96 crops) lets it take any crop size.
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        plan = [(c, 2), (2 * c, 1), (2 * c, 2), (4 * c, 1), (4 * c, 2), (8 * c, 1), (8 * c, 2)]
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        in_ch = c
        for out_ch, stride in plan:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            in_ch = out_ch
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * 36, 16 * c), nn.LeakyReLU(0.2, inplace=True), nn.Linear(16 * c, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).view(-1)


class SRInference(nn.Module):
    """What gets exported: LR RGB [0,1] NCHW -> SR RGB [0,1] NCHW (generator in eval mode, output clamped)."""

    def __init__(self, generator: SRResNet) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.generator(lr).clamp(0.0, 1.0)


# -- configs -------------------------------------------------------------------------------------------------
@dataclass
class SRResNetConfig(CommonConfig):
    """SRResNet pre-training; defaults are the paper's network (16 blocks, 64 channels, batch norm, MSE)."""

    scale: int = 4  # 2 or 4 (8 works too)
    blocks: int = 16
    channels: int = 64
    batch_norm: bool = True
    bicubic_skip: bool = False  # predict a residual over bicubic upscaling (not in the paper; see SRResNet)
    pixel_loss: str = "mse"  # mse | l1
    lr_patch: int = 24  # LR crop side; the HR crop is lr_patch * scale (96 at x4, as in the paper)
    lr: float = 1e-4


@dataclass
class SRGANConfig(SRResNetConfig):
    """SRGAN fine-tuning: content + 1e-3 adversarial loss against the SRGAN discriminator."""

    init_from: str = ""  # srresnet (or srgan) checkpoint whose generator starts the fine-tune
    vgg_weights: str = ""  # torchvision-format VGG19 state dict; empty = image-gradient content fallback
    vgg_layer: str = "5_4"
    content_weight: float = 0.006  # on VGG feature MSE (the paper's 1/12.75 rescale, squared)
    fallback_content_weight: float = 1.0  # on image-gradient MSE when no VGG19 weights are given
    pixel_weight: float = 1.0  # pixel loss weight; 0 = the paper's SRGAN-VGG54 (content + adversarial only)
    adversarial: str = "nonsaturating"  # any name in training.objectives
    adv_weight: float = 1e-3
    d_channels: int = 64
    d_lr: float = 1e-4


# -- applications --------------------------------------------------------------------------------------------
@register_model("srresnet", SRResNetConfig)
class SRResNetApp(Application):
    """SRResNet trained on a pixel loss; evaluation is held-out PSNR/SSIM-Y next to bicubic."""

    config: SRResNetConfig

    def __init__(self, config: SRResNetConfig) -> None:
        super().__init__(config)
        if config.pixel_loss not in PIXEL_LOSSES:
            raise GanserveError(f"pixel_loss must be one of {', '.join(PIXEL_LOSSES)}, got {config.pixel_loss!r}")
        if config.lr_patch < 4 or config.batch_size < 1:
            raise GanserveError("lr_patch must be >= 4 and batch_size >= 1")
        self.generator = SRResNet(config.scale, config.blocks, config.channels, config.batch_norm,
                                  config.bicubic_skip)
        self.pixel_loss = PIXEL_LOSSES[config.pixel_loss]
        self.source: SRSource | None = None

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {"g": self.adam(self.generator, c.lr)}

    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        self.source, data_facts = SRSource.from_config(self.config.data_dir, self.config.scale, self.config.lr_patch)
        self.facts["data"] = data_facts
        self.facts["held_out"] = HELD_OUT_DESCRIPTION

    def make_batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.source is None:
            raise RuntimeError("setup_training() must run before make_batch()")
        return self.source.batch(self.config.batch_size, step_generator(self.config.seed, step, rank))

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        lr, hr = (t.to(self.device) for t in batch)
        loss = self.pixel_loss(self.generator(lr), hr)
        self.optimize("g", loss)
        return {"loss_pix": float(loss.detach())}

    # -- evaluation and pictures ----------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, lr: np.ndarray) -> np.ndarray:
        was_training = self.generator.training
        self.generator.eval()
        try:
            out = self.generator(torch.from_numpy(lr).to(self.device)).clamp(0.0, 1.0)
        finally:
            self.generator.train(was_training)
        return out.cpu().numpy()

    def evaluate(self) -> dict[str, float]:
        return evaluate_sr(self._predict, self.config.scale)

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
            examples.append(DemoExample(name=f"photo{i}", image=_uint8(lr[0].transpose(1, 2, 0)), truth=_uint8(hr)))
        return examples

    def export_spec(self) -> ExportSpec:
        c = self.config
        module = SRInference(copy.deepcopy(self.generator).cpu().eval()).eval()
        small, larger = held_out_lr_crops(c.scale, [(1, 32, 32), (2, 48, 40)])

        def evaluate(predictor: Any) -> dict[str, float]:
            return evaluate_sr(lambda lr: predictor({"lr": lr})["sr"], c.scale)

        def calibration() -> Any:
            source = SRSource([load_builtin(e) for e in BUILTIN_TRAIN], c.scale, 32, augment=False)
            gen = torch.Generator().manual_seed(1234)
            for _ in range(8):
                lr, _hr = source.batch(1, gen)
                yield {"lr": lr.numpy()}

        norm = "batch norm" if c.batch_norm else "no batch norm"
        architecture = f"{self.model_name}: SRResNet {c.blocks} blocks x {c.channels} channels, {norm}, x{c.scale}"
        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(small),),
            inputs=[TensorSpec("lr", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=[TensorSpec("sr", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="super_resolution",
            architecture=architecture,
            scale=c.scale,
            spatial_multiple=1,
            tile_safe=True,  # eval-mode batch norm is a per-channel affine map: no whole-image statistics
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


@register_model("srgan", SRGANConfig)
class SRGANApp(SRResNetApp):
    """SRResNet generator fine-tuned adversarially: alternating discriminator and generator updates."""

    config: SRGANConfig

    def __init__(self, config: SRGANConfig) -> None:
        super().__init__(config)
        if config.vgg_layer not in VGG19_RELU_INDEX:
            raise GanserveError(f"vgg_layer must be one of {', '.join(VGG19_RELU_INDEX)}, got {config.vgg_layer!r}")
        self.objective = get_objective(config.adversarial)
        self.discriminator = SRDiscriminator(config.d_channels)
        self.content: ContentLoss | None = None

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        return {
            "g": self.adam(self.generator, c.lr),
            "d": self.adam(self.discriminator, c.d_lr),
        }

    def setup_training(self, context: TrainContext) -> None:
        c = self.config
        # bad files fail first, before the data loads
        if c.vgg_weights:
            self.content = ContentLoss(load_vgg19_features(c.vgg_weights, c.vgg_layer).to(context.device))
            self.facts["content_loss"] = f"vgg19 relu{c.vgg_layer} feature MSE (weights {c.vgg_weights})"
        else:
            self.content = ContentLoss(None)
            self.facts["content_loss"] = (
                "image_gradients: no VGG19 weights given (--vgg-weights), content loss is the MSE of image "
                "gradients, not a perceptual loss"
            )
        if c.init_from and not context.resuming:
            self._init_generator(c.init_from)
        super().setup_training(context)
        context.note(f"content loss: {self.facts['content_loss']}")
        if c.init_from and not context.resuming:
            context.note(f"generator initialised from {c.init_from}")
        elif not c.init_from:
            context.note("init_from not set: the generator starts from random weights (pre-train with srresnet first)")

    def _init_generator(self, path: str) -> None:
        from ganserve.training.checkpoint import load_checkpoint

        payload = load_checkpoint(path)
        theirs = payload["config"]
        diffs = [f"{k}={theirs.get(k)!r} (here {getattr(self.config, k)!r})" for k in GENERATOR_SHAPE_KEYS
                 if theirs.get(k) != getattr(self.config, k)]
        if diffs:
            raise GanserveError(f"init_from {path}: generator differs: {', '.join(diffs)}; set the same values")
        state = {k[len("generator."):]: v for k, v in payload["state"].items() if k.startswith("generator.")}
        if not state:
            raise GanserveError(f"init_from {path}: checkpoint of {payload['model']!r} holds no generator weights")
        self.generator.load_state_dict(state)

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        c = self.config
        lr, hr = (t.to(self.device) for t in batch)
        sr = self.generator(lr)
        # discriminator: real HR vs (detached) SR
        self.discriminator.requires_grad_(True)
        loss_d = self.objective.d_loss(self.discriminator(hr), self.discriminator(sr.detach()))
        self.optimize("d", loss_d)
        # generator: content + pixel + adversarial, with D frozen
        self.discriminator.requires_grad_(False)
        assert self.content is not None, "setup_training() must run before train_step()"
        content = self.content(sr, hr)
        weight = c.content_weight if self.content.mode == "vgg19" else c.fallback_content_weight
        pix = self.pixel_loss(sr, hr)
        adv = self.objective.g_loss(self.discriminator(sr), hr)
        loss_g = weight * content + c.pixel_weight * pix + c.adv_weight * adv
        self.optimize("g", loss_g)
        self.discriminator.requires_grad_(True)
        return {
            "loss_d": float(loss_d.detach()),
            "loss_g": float(loss_g.detach()),
            "loss_content": float(content.detach()),
            "loss_pix": float(pix.detach()),
            "loss_adv": float(adv.detach()),
        }


def _uint8(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float picture as the 8-bit one a PNG carries."""
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
