"""pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional Adversarial Networks").

U-Net generator, PatchGAN discriminator that sees (input, output) pairs, loss = cGAN + lambda * L1 (lambda = 100),
dropout as the generator's noise, batch or instance norm. Both networks are named in the config (``generator``,
``discriminator``), so any registered image-to-image generator (e.g. ``resnet-generator``) trains the same way.
``gan_weight: 0`` trains the same generator on L1 alone (the paper's ablation): no discriminator update runs, so in a
fixed time budget it takes more steps.
Data: a built-in task on the built-in photos (``task``: ``colour`` = grey -> colour, the paper's BW -> colour;
``edges`` = Canny edges -> photo) or a paired folder (``data_dir``). Images are RGB in [0, 1] in and out; the networks
work in [-1, 1] inside. The colour task's generator sees the input's luma only (training and the exported model alike),
so a served colouriser accepts any photo.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganserve.core.pictures import picture_grid
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.calibration import seeded_feeds
from ganserve.training.config import CommonConfig
from ganserve.training.data.images import BUILTIN_HELD_OUT, BUILTIN_TRAIN, step_generator
from ganserve.training.data.paired import (
    TASK_DESCRIPTIONS, PairedSource, builtin_train_pairs, check_task, held_out_pairs, load_paired_folder, swap_direction,
)
from ganserve.core.export_spec import ExportSpec
from ganserve.training.applications import translation_eval as te
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.specs import network_field
from ganserve.training.networks.translation import Translator, to_grey, with_luma
from ganserve.training.objectives import get_objective
from ganserve.training.registry import register_model



def held_out_description(task: str) -> str:
    return (f"{TASK_DESCRIPTIONS[task]} on held-out photos (never trained on): {', '.join(BUILTIN_HELD_OUT)}; "
            "centre-cropped to the generator's spatial multiple")


@dataclass
class Pix2PixConfig(CommonConfig):
    """pix2pix; defaults are the paper's (unet_256, 64 filters, batch norm, lambda 100, Adam 2e-4, beta1 0.5)."""

    # RGB -> RGB in [-1, 1]; U-Net depth 8 = unet_256, 7 = unet_128 (inputs are multiples of 2**depth), channel cap
    # ngf * max_mult, norm batch | instance | none
    generator: dict[str, Any] = network_field("unet", depth=8, ngf=64, max_mult=8, norm="batch", dropout=0.5)
    # sees (input, output) pairs: 6 channels in; layers 3 = the 70x70 PatchGAN
    discriminator: dict[str, Any] = network_field("patchgan", ndf=64, layers=3, norm="batch", max_mult=8)
    crop: int = 256  # training crop side (a multiple of the generator's spatial multiple)
    l1_weight: float = 100.0
    gan_weight: float = 1.0  # 0 = the L1-only U-Net baseline
    adversarial: str = "nonsaturating"  # the cGAN loss; any name in training.objectives
    direction: str = "AtoB"  # AtoB | BtoA (folder data)
    # built-in data: colour (grey -> colour) | edges (edges -> photo); stored configs from before the colour task
    # have no key and meant edges, hence that default (the shipped recipe, configs/pix2pix_cpu.yaml, sets colour)
    task: str = "edges"
    # colour task: the output is the generator's chroma on the input's own Rec. 601 luma, in training, export and
    # serving alike (Translator's keep_luma); stored configs without the key trained without it, hence False
    keep_luma: bool = False
    # with keep_luma: Gaussian low-pass (sigma in pixels) of the predicted colour offset at inference (export and
    # serving; Translator's chroma_sigma); 0 = none. Chosen on training photos (docs/translation.md)
    chroma_sigma: float = 0.0
    batch_size: int = 1
    lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5


@register_model("pix2pix", Pix2PixConfig)
class Pix2PixApp(Application):
    """Conditional GAN for paired translation; evaluation is held-out L1/PSNR/SSIM/sharpness vs the true photo."""

    training_only = ("discriminator",)

    config: Pix2PixConfig

    def __init__(self, config: Pix2PixConfig) -> None:
        super().__init__(config)
        c = config
        if c.batch_size < 1 or c.l1_weight < 0 or c.gan_weight < 0:
            raise GanserveError("batch_size must be >= 1 and l1_weight, gan_weight >= 0")
        if c.l1_weight == 0 and c.gan_weight == 0:
            raise GanserveError("l1_weight and gan_weight are both 0: nothing to train")
        swap_direction([], c.direction)  # validates the name
        check_task(c.task)
        if c.chroma_sigma < 0 or (c.chroma_sigma > 0 and not c.keep_luma):
            raise GanserveError(f"chroma_sigma must be >= 0 and needs keep_luma (got {c.chroma_sigma})")
        if c.keep_luma and (c.task != "colour" or c.data_dir):
            raise GanserveError("keep_luma applies to the built-in colour task only (its input is the photo's own "
                                "luma); a folder of pairs or the edges task has no luma to keep")
        self.objective = get_objective(c.adversarial)
        self.generator = build_network(c.generator, "generator", in_channels=3, out_channels=3)
        if c.crop < self.multiple or c.crop % self.multiple:
            raise GanserveError(f"crop {c.crop} must be a multiple of the generator's spatial multiple {self.multiple}")
        self.discriminator = build_network(c.discriminator, "discriminator", in_channels=6)
        self.source: PairedSource | None = None

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this: the generator's spatial multiple (2**depth for the U-Net)."""
        return int(getattr(self.generator, "spatial_multiple", 1))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.gan_optimizers()

    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        c = self.config
        if c.data_dir:
            pairs = swap_direction(load_paired_folder(c.data_dir, c.crop), c.direction)
            self.facts["data"] = {"source": f"paired folder {c.data_dir}", "pairs": len(pairs), "direction": c.direction}
        else:
            pairs = builtin_train_pairs(c.task)
            self.facts["data"] = {"source": f"builtin {TASK_DESCRIPTIONS[c.task]}", "train": list(BUILTIN_TRAIN)}
        self.source = PairedSource(pairs, c.crop)
        self.facts["held_out"] = held_out_description(c.task)
        self.facts["loss"] = (f"{c.gan_weight:g} * {c.adversarial} cGAN + {c.l1_weight:g} * L1" if c.gan_weight > 0
                              else f"L1 only (x{c.l1_weight:g}), no discriminator: the paper's L1 ablation")
        context.note(f"pix2pix loss: {self.facts['loss']}; data: {self.facts['data']['source']}")

    @property
    def grey_input(self) -> bool:
        """The colour task's generator sees luma only (a folder of pairs is taken as it is)."""
        return self.config.task == "colour" and not self.config.data_dir

    def make_batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.source is None:
            raise RuntimeError("setup_training() must run before make_batch()")
        return self.source.batch(self.config.batch_size, step_generator(self.config.seed, step, rank))

    def d_loss(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor) -> torch.Tensor:
        """Discriminator loss on [-1, 1] tensors, halved as in the paper (slows D relative to G)."""
        real = self.discriminator(torch.cat([real_a, real_b], 1))
        fake = self.discriminator(torch.cat([real_a, fake_b.detach()], 1))
        return 0.5 * self.objective.d_loss(real, fake)

    def g_losses(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generator loss gan_weight * cGAN + l1_weight * L1 on [-1, 1] tensors (D frozen), with its parts."""
        c = self.config
        l1 = F.l1_loss(fake_b, real_b)
        if c.gan_weight == 0:
            return {"g": c.l1_weight * l1, "l1": l1}
        self.discriminator.requires_grad_(False)
        try:
            adv = self.objective.g_loss(self.discriminator(torch.cat([real_a, fake_b], 1)), real_b)
        finally:
            self.discriminator.requires_grad_(True)
        return {"g": c.gan_weight * adv + c.l1_weight * l1, "adv": adv, "l1": l1}

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        a, b = (t.to(self.device) * 2.0 - 1.0 for t in batch)
        if self.grey_input:
            a = to_grey(a)
        fake = self.generator(a)
        if self.config.keep_luma:  # as Translator serves it: the colour on the input's own light, in [0, 1]
            fake = with_luma(((fake + 1.0) * 0.5).clamp(0.0, 1.0), (a + 1.0) * 0.5) * 2.0 - 1.0
        out: dict[str, float] = {}
        if self.config.gan_weight > 0:
            loss_d = self.d_loss(a, b, fake)
            self.optimize("d", loss_d)
            out["loss_d"] = float(loss_d.detach())
        parts = self.g_losses(a, b, fake)
        self.optimize("g", parts["g"])
        out.update({f"loss_{k}": float(v.detach()) for k, v in parts.items()})
        return out

    # -- evaluation and pictures ----------------------------------------------------------------------
    @torch.no_grad()
    def _predict(self, x: np.ndarray) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            return self.translator(self.generator).to(self.device)(torch.from_numpy(x).to(self.device)).cpu().numpy()
        finally:
            self.train(was_training)

    def translator(self, generator: torch.nn.Module) -> Translator:
        """What serves ``generator`` (evaluation and export alike): RGB [0, 1] in and out, with this config's grey
        input, kept luma and colour low-pass."""
        return Translator(generator, self.grey_input, self.config.keep_luma, self.config.chroma_sigma)

    def held_out(self, which: str = "headline") -> list[tuple[np.ndarray, np.ndarray]]:
        """Held-out (input, photo) uint8 pairs of the built-in task, centre-cropped to the spatial multiple: the
        headline photos or the evaluation set's colour photos (images.EVAL_SETS)."""
        m = self.multiple
        return [(te.center_crop_multiple(a, m), te.center_crop_multiple(b, m))
                for a, b in held_out_pairs(self.config.task, which)]

    def evaluate_predictor(self, predict: te.ArrayPredictor, which: str = "headline") -> dict[str, float]:
        """Held-out figures of ``predict`` against the true photo, next to the identity mapping (the input as
        output); the colour task adds colourfulness (Hasler-Suesstrunk) of the output, the input and the truth."""
        rows = []
        for a, b in self.held_out(which):
            x, truth = te.to_batch(a), te.to_hwc(te.to_batch(b))
            pred = te.to_hwc(predict(x))
            row = te.image_figures(pred, truth)
            row["grid"] = te.grid_strength(pred, truth)
            row.update({f"identity_{k}": v for k, v in te.image_figures(te.to_hwc(x), truth).items()})
            if self.config.task == "colour":
                row.update(colourfulness=te.colourfulness(pred), truth_colourfulness=te.colourfulness(truth),
                           **te.luma_figures(pred, te.to_hwc(x), truth))
            rows.append(row)
        out = te.mean_figures(rows)
        out["eval_images"] = float(len(rows))
        return out

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_predictor(self._predict)

    def evaluate_eval_set(self) -> dict[str, float] | None:
        return self.evaluate_predictor(self._predict, "eval")

    def _held_out_images(self, which: int) -> list[np.ndarray]:
        return [pair[which] for pair in held_out_pairs(self.config.task)]

    def sample_grid(self) -> np.ndarray:
        side = max(self.multiple, 64)
        a = te.crops(self._held_out_images(0), 3, side, side)
        b = te.crops(self._held_out_images(1), 3, side, side)
        return picture_grid([a, self._predict(a), b])

    def demo_examples(self, count: int) -> list[DemoExample]:
        names = [e.split(":")[1].split("[")[0] for e in BUILTIN_HELD_OUT]
        out = []
        for i in range(min(count, len(names))):
            a, b = held_out_pairs(self.config.task)[i]
            out.append(DemoExample(name=f"{names[i]}_{'grey' if self.config.task == 'colour' else 'edges'}",
                                   image=te.uint8_crop(a, 256), truth=te.uint8_crop(b, 256)))
        return out

    # -- export ------------------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        c = self.config
        m = self.multiple
        module = self.translator(copy.deepcopy(self.generator).cpu().eval()).eval()
        flower = self._held_out_images(0)[:1]  # 427x640: room for m x 2m crops up to unet_256's m = 256
        # at least 32 pixels: a ResNet generator (multiple 4) halves twice and reflection-pads by 1 after that
        side = m * -(-32 // m)
        small, larger = te.crops(flower, 1, side, side), te.crops(flower, 2, side, 2 * side)

        def evaluate(predictor: Any) -> dict[str, float]:
            return self.evaluate_predictor(lambda x: predictor({"image": x})["translated"])

        def calibration() -> Any:
            source = PairedSource(builtin_train_pairs(c.task), max(m, 64), augment=False)
            return seeded_feeds(lambda gen: {"image": source.batch(1, gen)[0].numpy()})

        kind = "L1-only" if c.gan_weight == 0 else "pix2pix"
        architecture = (f"{self.model_name}: {kind} {describe_network(self.generator)}; "
                        f"{describe_network(self.discriminator)}")
        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(small),),
            inputs=[TensorSpec("image", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=[TensorSpec("translated", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="translation",
            architecture=architecture,
            scale=1,
            spatial_multiple=m,
            # the U-Net's bottleneck sees the whole input (and instance norm, if chosen, whole-image statistics):
            # tiles would not reproduce the whole-image output, so the server never tiles it
            tile_safe=False,
            dynamic_spatial=True,
            parity_inputs=[{"image": small}, {"image": larger}],
            evaluate=evaluate,
            quality_key="psnr",
            calibration=calibration,
            card_extra=self._card_extra(),
        )

    def _card_extra(self) -> dict[str, Any]:
        return self.card_facts(
            "RGB in [0, 1] in and out (output clamped)" + ("; the input's Rec. 601 luma is what the generator sees"
                                                           if self.grey_input else "")
            + ("; the output keeps the input's luma (the generator supplies chroma only)" if self.config.keep_luma
               else ""),
            {"source": f"builtin {TASK_DESCRIPTIONS[self.config.task]}", "train": list(BUILTIN_TRAIN)},
            held_out=held_out_description(self.config.task), loss=self.run_metrics().get("loss"))
