"""``srgan`` (Ledig et al. 2017, "Photo-Realistic Single Image Super-Resolution Using a GAN"): any registered SR
generator (``init_from`` an srresnet or srgan checkpoint with the same generator) fine-tuned against a discriminator
(the SRGAN one by default) with content loss (VGG19 phi_5,4 feature MSE when ``vgg_weights`` names a file, else the
image-gradient fallback, stated in the log and the checkpoint) + pixel loss + adversarial loss (weight 1e-3).
Images are RGB in [0, 1] in and out; the exported module clamps its output to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ganserve.core.errors import GanserveError
from ganserve.training.application import TrainContext
from ganserve.training.checkpoint import load_checkpoint
from ganserve.training.applications.sr_base import SRApplication, SRConfig
from ganserve.training.networks import build_network
from ganserve.training.networks.specs import network_field
from ganserve.training.networks.vgg import VGG19_RELU_INDEX, load_vgg19_features
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.content import ContentLoss
from ganserve.training.registry import make_config, register_model


@dataclass
class SRGANConfig(SRConfig):
    """SRGAN fine-tuning: content + 1e-3 adversarial loss against the discriminator the config names."""

    init_from: str = ""  # srresnet (or srgan) checkpoint whose generator starts the fine-tune
    vgg_weights: str = ""  # torchvision-format VGG19 state dict; empty = image-gradient content fallback
    vgg_layer: str = "5_4"
    content_weight: float = 0.006  # on VGG feature MSE (the paper's 1/12.75 rescale, squared)
    fallback_content_weight: float = 1.0  # on image-gradient MSE when no VGG19 weights are given
    pixel_weight: float = 1.0  # pixel loss weight; 0 = the paper's SRGAN-VGG54 (content + adversarial only)
    adversarial: str = "nonsaturating"  # any name in training.objectives
    adv_weight: float = 1e-3
    discriminator: dict[str, Any] = network_field("srgan-discriminator", channels=64)
    d_lr: float = 1e-4


@register_model("srgan", SRGANConfig)
class SRGANApp(SRApplication):
    """An SR generator fine-tuned adversarially: alternating discriminator and generator updates."""

    config: SRGANConfig

    def __init__(self, config: SRGANConfig) -> None:
        super().__init__(config)
        if config.vgg_layer not in VGG19_RELU_INDEX:
            raise GanserveError(f"vgg_layer must be one of {', '.join(VGG19_RELU_INDEX)}, got {config.vgg_layer!r}")
        self.objective = get_objective(config.adversarial)
        self.discriminator = build_network(config.discriminator, "discriminator")
        self.content: ContentLoss | None = None

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.gan_optimizers()

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
        """Load the generator of another SR checkpoint; its generator spec and scale must equal this config's."""
        payload = load_checkpoint(path)
        theirs = make_config(payload["model"], payload["config"])
        if not hasattr(theirs, "generator") or not hasattr(theirs, "scale"):
            raise GanserveError(f"init_from {path}: a {payload['model']!r} checkpoint holds no SR generator")
        there = {"scale": theirs.scale, **theirs.generator}
        here = {"scale": self.config.scale, **self.config.generator}
        diffs = [f"{k}={there.get(k)!r} (here {here.get(k)!r})" for k in sorted(set(there) | set(here))
                 if there.get(k) != here.get(k)]
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
