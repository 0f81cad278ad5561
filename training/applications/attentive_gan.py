"""Attentive GAN for raindrop removal (Qian et al., CVPR 2018, "Attentive Generative Adversarial Network for
Raindrop Removal from a Single Image").

Registered as ``attentive-gan``:
- generator = attentive-recurrent network (N time steps; each: residual blocks, a ConvLSTM and a conv to a
  one-channel attention map, fed back with the image) + a contextual autoencoder with skip connections and
  dilated convolutions that takes the image and the final attention map and outputs the clean image at 1/4, 1/2
  and full size;
- losses: attention loss sum_t theta^(N-t) MSE(A_t, M), multi-scale MSE (weights 0.6, 0.8, 1.0), perceptual loss
  (VGG19 features when a weights file is named, else the stated image-gradient fallback), adversarial (weight 0.01);
- attentive discriminator: an inner layer predicts a mask (trained towards the generator's final attention on
  derained images and towards zero on clean ones, weight gamma = 0.05) that multiplies its own features.

``baseline_l1=true`` trains the same autoencoder alone (attention input fixed at 0.5) with an L1 loss: the
baseline the quality report compares against. Differences from the paper are listed in ``AttentiveGANConfig``.
Images are RGB in [0, 1]; the exported graph maps a rainy image to (derained image, attention map).
Networks: ``training/networks/derain.py``; losses: ``training/objectives/derain.py``; held-out evaluation:
``training/applications/derain_eval.py``. This module holds the config and the application.
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

from ganserve.core.image_metrics import to_uint8
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.calibration import seeded_feeds
from ganserve.training.config import CommonConfig
from ganserve.training.data.images import BUILTIN_HELD_OUT, BUILTIN_TRAIN, load_builtin, step_generator
from ganserve.training.data.raindrops import RainSource, held_out_pairs, stack_pairs
from ganserve.training.applications.derain_eval import HELD_OUT_DESCRIPTION, derain_grid, evaluate_derain
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.specs import network_field
from ganserve.training.networks.vgg import VGG19_RELU_INDEX, load_vgg19_features
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.content import ContentLoss
from ganserve.training.objectives.derain import attention_loss, multiscale_loss
from ganserve.training.registry import register_model


class DerainInference(nn.Module):
    """What gets exported: rainy RGB [0,1] NCHW -> derained RGB [0,1] (clamped) and, with attention, the map."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, rainy: torch.Tensor) -> Any:
        maps, outs = self.generator(rainy)
        derained = outs[-1].clamp(0.0, 1.0)
        return (derained, maps[-1]) if self.generator.arn is not None else derained


# -- config --------------------------------------------------------------------------------------------------
@dataclass
class AttentiveGANConfig(CommonConfig):
    """Attentive GAN on 2 CPU cores. Differences from the paper, and why:

    - widths: attentive net 12 channels and 2 residual blocks per step (paper 32 and 5), autoencoder 24/48/96
      channels (paper 64/128/256), discriminator 16..128 channels and a 128-unit dense layer (paper 1024): so that
      about ten minutes of training on 2 cores buys a measurable gain on 64x64 crops;
    - ``residual``: the autoencoder's outputs are corrections added to the input image (paper: direct outputs);
    - perceptual loss: VGG19 (the project's) instead of VGG16, or without weights the image-gradient fallback;
    - the discriminator's mask is predicted at 1/4 size and its target is the generator's map area-resized to it.
    """

    patch: int = 64  # training crop side (a multiple of 4)
    # attentive-recurrent net: time_steps N, arn_channels, arn_blocks per step; contextual autoencoder: ae_width,
    # residual (outputs are corrections to the input); baseline_l1 builds it without the attentive net
    generator: dict[str, Any] = network_field("attentive-generator", time_steps=4, arn_channels=12, arn_blocks=2,
                                              ae_width=24, residual=True)
    theta: float = 0.8
    scale_weights: str = "0.6,0.8,1.0"  # lambda for the 1/4, 1/2 and full-size outputs
    perceptual_weight: float = 1.0
    vgg_weights: str = ""  # torchvision-format VGG19 state dict; empty = image-gradient fallback
    vgg_layer: str = "2_2"
    adversarial: str = "minimax"  # the paper's log(1 - D(G(I))); any name in training.objectives
    adv_weight: float = 0.01
    gamma: float = 0.05  # weight of the discriminator's mask loss
    discriminator: dict[str, Any] = network_field("attentive-discriminator", channels=16)
    d_lr: float = 2e-4
    baseline_l1: bool = False  # the autoencoder alone, L1 loss, no attention or discriminator
    batch_size: int = 8
    lr: float = 5e-4
    eval_every: int = 0
    sample_every: int = 0
    ckpt_every: int = 100


# -- the application ----------------------------------------------------------------------------------------
@register_model("attentive-gan", AttentiveGANConfig)
class AttentiveGANApp(Application):
    """Raindrop removal; evaluation is held-out PSNR/SSIM against the clean image, next to the rainy input."""

    config: AttentiveGANConfig

    def __init__(self, config: AttentiveGANConfig) -> None:
        super().__init__(config)
        if config.vgg_layer not in VGG19_RELU_INDEX:
            raise GanserveError(f"vgg_layer must be one of {', '.join(VGG19_RELU_INDEX)}, got {config.vgg_layer!r}")
        self.scale_weights = _parse_weights(config.scale_weights)
        self.generator = build_network(config.generator, "generator", attention=not config.baseline_l1)
        multiple = self.multiple
        if config.patch < 16 or config.patch % multiple:
            raise GanserveError(f"patch must be a multiple of {multiple} and >= 16, got {config.patch}")
        self.discriminator = None if config.baseline_l1 else build_network(config.discriminator, "discriminator")
        self.objective = None if config.baseline_l1 else get_objective(config.adversarial)
        self.content: ContentLoss | None = None
        self.source: RainSource | None = None

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this: the generator's spatial multiple (4: two stride-2 stages)."""
        return int(getattr(self.generator, "spatial_multiple", 1))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        opts = {"g": self.adam(self.generator, c.lr)}
        if self.discriminator is not None:
            opts["d"] = self.adam(self.discriminator, c.d_lr)
        return opts

    def setup_training(self, context: TrainContext) -> None:
        c = self.config
        if c.baseline_l1:
            self.facts["loss"] = "baseline: L1 on the full-size output, autoencoder alone (attention input 0.5)"
        elif c.vgg_weights:
            self.content = ContentLoss(load_vgg19_features(c.vgg_weights, c.vgg_layer).to(context.device))
            self.facts["content_loss"] = f"vgg19 relu{c.vgg_layer} feature MSE (weights {c.vgg_weights})"
        else:
            self.content = ContentLoss(None)
            self.facts["content_loss"] = (
                "image_gradients: no VGG19 weights given (--vgg-weights), the perceptual term is the MSE of image "
                "gradients, not a perceptual loss"
            )
        super().setup_training(context)
        self.source, data_facts = RainSource.from_config(c.data_dir, c.patch)
        self.facts["data"] = data_facts
        self.facts["held_out"] = HELD_OUT_DESCRIPTION
        context.note(self.facts.get("content_loss") or self.facts["loss"])

    def make_batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.source is None:
            raise RuntimeError("setup_training() must run before make_batch()")
        return self.source.batch(self.config.batch_size, step_generator(self.config.seed, step, rank))

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        rainy, clean, mask = (t.to(self.device) for t in batch)
        if self.config.baseline_l1:
            loss = F.l1_loss(self.generator(rainy)[1][-1], clean)
            self.optimize("g", loss)
            return {"loss_l1": float(loss.detach())}
        return self._gan_step(rainy, clean, mask)

    def _gan_step(self, rainy: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        c = self.config
        assert self.discriminator is not None and self.objective is not None and self.content is not None
        maps, outs = self.generator(rainy)
        fake = outs[-1]
        # discriminator: real/fake plus its mask towards A_N on derained images and towards 0 on clean ones
        self.discriminator.requires_grad_(True)
        logit_real, map_real = self.discriminator(clean)
        logit_fake, map_fake = self.discriminator(fake.detach())
        target = F.interpolate(maps[-1].detach(), size=map_fake.shape[-2:], mode="area")
        loss_map = F.mse_loss(map_fake, target) + F.mse_loss(map_real, torch.zeros_like(map_real))
        loss_d = self.objective.d_loss(logit_real, logit_fake) + c.gamma * loss_map
        self.optimize("d", loss_d)
        # generator: adversarial + attention + multi-scale + perceptual, D frozen
        self.discriminator.requires_grad_(False)
        adv = self.objective.g_loss(self.discriminator(fake)[0], logit_real.detach())
        att = attention_loss(maps, mask, c.theta)
        ms = multiscale_loss(outs, clean, self.scale_weights)
        perceptual = self.content(fake, clean)
        loss_g = c.adv_weight * adv + att + ms + c.perceptual_weight * perceptual
        self.optimize("g", loss_g)
        self.discriminator.requires_grad_(True)
        return {"loss_d": float(loss_d.detach()), "loss_map": float(loss_map.detach()), "loss_g": float(loss_g.detach()),
                "loss_att": float(att.detach()), "loss_ms": float(ms.detach()), "loss_perc": float(perceptual.detach()),
                "loss_adv": float(adv.detach())}

    # -- inference, evaluation, pictures ---------------------------------------------------------------
    @torch.no_grad()
    def predict(self, rainy: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """NCHW float32 rainy batch in [0, 1] -> (derained, final attention map or None for the baseline)."""
        was_training = self.generator.training
        self.generator.eval()
        try:
            maps, outs = self.generator(torch.from_numpy(np.ascontiguousarray(rainy)).to(self.device))
        finally:
            self.generator.train(was_training)
        att = maps[-1].cpu().numpy() if self.generator.arn is not None else None
        return outs[-1].clamp(0.0, 1.0).cpu().numpy(), att

    def evaluate(self) -> dict[str, float]:
        return evaluate_derain(self.predict)

    def sample_grid(self) -> np.ndarray:
        return derain_grid(self.predict, count=4)

    def demo_examples(self, count: int) -> list[DemoExample]:
        pairs = held_out_pairs(max(count, 1))[:count]
        return [DemoExample(name=f"held_out_{i}", image=to_uint8(p.rainy), truth=to_uint8(p.clean)) for i, p in enumerate(pairs)]

    # -- export ------------------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        c = self.config
        module = DerainInference(copy.deepcopy(self.generator).cpu().eval()).eval()
        rainy, _, _ = stack_pairs(held_out_pairs(2))
        small = rainy[:1, :, 16:80, 24:88].contiguous()  # 64 x 64
        larger = rainy[1:2, :, :48, 8:88].numpy().copy()  # 48 x 80
        with_map = self.generator.arn is not None
        outputs = [TensorSpec("derained", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])]
        if with_map:
            outputs.append(TensorSpec("attention", [1, -1, -1], "FP32", "mask", "NCHW", [0.0, 1.0]))

        def evaluate(predictor: Any) -> dict[str, float]:
            def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
                out = predictor({"rainy": x})
                return out["derained"], out.get("attention")
            return evaluate_derain(run)

        def calibration() -> Any:
            source = RainSource(c.patch, images=[load_builtin(e) for e in BUILTIN_TRAIN])
            return seeded_feeds(lambda gen: {"rainy": source.batch(1, gen)[0].numpy()})

        return ExportSpec(
            module=module,
            example_inputs=(small,),
            inputs=[TensorSpec("rainy", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=outputs,
            task="derain",
            architecture=f"{self.model_name}: {describe_network(self.generator)}",
            scale=1,
            spatial_multiple=self.multiple,
            # no whole-image statistics, but one output pixel sees receptive_radius() pixels each side (~180):
            # exact tiling would need overlaps far beyond any useful tile, so the server runs whole images
            tile_safe=False,
            dynamic_spatial=True,
            parity_inputs=[{"rainy": small.numpy()}, {"rainy": larger}],
            evaluate=evaluate,
            quality_key="psnr",
            calibration=calibration,
            card_extra=self._card_extra(),
        )

    def _card_extra(self) -> dict[str, Any]:
        metrics = self.run_metrics()
        return self.card_facts(
            "RGB in [0, 1] in and out (output clamped); attention map in [0, 1]",
            {"source": "builtin photos with rendered raindrops", "train": list(BUILTIN_TRAIN),
             "held_out": list(BUILTIN_HELD_OUT)},
            held_out=HELD_OUT_DESCRIPTION, content_loss=metrics.get("content_loss") or metrics.get("loss"),
            receptive_radius_px=self.generator.receptive_radius(),
            tiling="whole image: the receptive field (radius in receptive_radius_px) exceeds useful tile overlaps")


def _parse_weights(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError as exc:
        raise GanserveError(f"scale_weights must be three numbers like 0.6,0.8,1.0, got {text!r}") from exc
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise GanserveError(f"scale_weights must be three non-negative numbers like 0.6,0.8,1.0, got {text!r}")
    return values  # type: ignore[return-value]

