"""CycleGAN (Zhu et al. 2017, "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks").

Two ResNet generators (G_AB, G_BA), two PatchGAN discriminators, least-squares adversarial loss, cycle loss
(lambda = 10), identity loss (0.5 * lambda), and a history pool of 50 generated images per discriminator. The config
names both networks (``generator``, ``discriminator``): any registered image-to-image generator trains the same way.
Data: the built-in unpaired task with a hidden colour grading (training/data/unpaired.py) or trainA/trainB folders.
One checkpoint holds both directions; ``export_direction`` ("ab" or "ba") chooses which one ``export_spec()``
exports, so the two directions become two models (``ganserve export CKPT --option export_direction=ba``).
Images are RGB in [0, 1] in and out; the networks work in [-1, 1] inside.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ganserve.core.image_metrics import to_uint8
from ganserve.core.pictures import picture_grid
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.calibration import seeded_feeds
from ganserve.training.config import CommonConfig
from ganserve.training.data.image_pool import ImagePool
from ganserve.training.data.images import BUILTIN_HELD_OUT, step_generator
from ganserve.training.data.unpaired import (
    DOMAIN_A, DOMAIN_B, TRANSFORM_DESCRIPTION, UnpairedSource, builtin_domains, dusk, dusk_uint8, held_out_a,
    load_unpaired_folder,
)
from ganserve.core.export_spec import ExportSpec
from ganserve.training.applications import translation_eval as te
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.specs import network_field
from ganserve.training.networks.translation import Translator
from ganserve.training.objectives import get_objective
from ganserve.training.registry import register_model

DIRECTIONS = ("ab", "ba")
HELD_OUT_DESCRIPTION = (
    f"held-out photos as domain A (never trained on): {', '.join(BUILTIN_HELD_OUT)}; their true B is the hidden "
    f"{TRANSFORM_DESCRIPTION}; centre-cropped to multiples of 4"
)


@dataclass
class CycleGANConfig(CommonConfig):
    """CycleGAN; defaults are the paper's (9 blocks, 64 filters, instance norm, lambda 10, identity 0.5, pool 50)."""

    # both generators (RGB -> RGB in [-1, 1]); ResNet generator blocks 9 for 256x256 training images, 6 for 128x128
    # in the paper; residual: add a clipped correction to the input (not in the paper; see ResnetGenerator)
    generator: dict[str, Any] = network_field("resnet-generator", ngf=64, blocks=9, norm="instance", residual=False)
    # both discriminators; layers 3 = the 70x70 PatchGAN; norm instance | batch | none
    discriminator: dict[str, Any] = network_field("patchgan", ndf=64, layers=3, norm="instance", max_mult=8)
    crop: int = 256  # a multiple of the generator's spatial multiple (4)
    cycle_weight: float = 10.0
    identity_weight: float = 0.5  # times cycle_weight, on ||G_AB(b) - b|| and ||G_BA(a) - a||
    adversarial: str = "lsgan"
    adv_weight: float = 2.0  # lsgan's generator loss is 0.5 * (D - 1)^2: 2.0 gives the paper's (D - 1)^2
    pool_size: int = 50
    export_direction: str = "ab"  # ab = A -> B (G_AB), ba = B -> A (G_BA)
    batch_size: int = 1
    lr: float = 2e-4
    beta1: float = 0.5


@register_model("cyclegan", CycleGANConfig)
class CycleGANApp(Application):
    """Unpaired translation both ways; evaluation measures both directions against the hidden true transform."""

    training_only = ("d_a", "d_b")

    config: CycleGANConfig

    def __init__(self, config: CycleGANConfig) -> None:
        super().__init__(config)
        c = config
        if c.export_direction not in DIRECTIONS:
            raise GanserveError(f"export_direction must be ab or ba, got {c.export_direction!r}")
        if c.batch_size < 1:
            raise GanserveError(f"batch_size must be >= 1, got {c.batch_size}")
        self.objective = get_objective(c.adversarial)
        self.g_ab = build_network(c.generator, "generator", in_channels=3, out_channels=3)
        if c.crop < self.multiple or c.crop % self.multiple:
            raise GanserveError(f"crop must be a positive multiple of {self.multiple} (got {c.crop})")
        self.g_ba = build_network(c.generator, "generator", in_channels=3, out_channels=3)
        self.d_a = build_network(c.discriminator, "discriminator", in_channels=3)
        self.d_b = build_network(c.discriminator, "discriminator", in_channels=3)
        self.pool_a, self.pool_b = ImagePool(c.pool_size), ImagePool(c.pool_size)
        self.source: UnpairedSource | None = None

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this: the generators' spatial multiple (4 for the ResNet generator)."""
        return int(getattr(self.g_ab, "spatial_multiple", 1))

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        g_params = list(self.g_ab.parameters()) + list(self.g_ba.parameters())
        d_params = list(self.d_a.parameters()) + list(self.d_b.parameters())
        return {"g": self.adam(g_params, c.lr),
                "d": self.adam(d_params, c.lr)}

    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        c = self.config
        if c.data_dir:
            domain_a, domain_b, facts = load_unpaired_folder(c.data_dir, c.crop)
        else:
            domain_a, domain_b = builtin_domains()
            facts = {"source": "builtin unpaired", "domain_a": list(DOMAIN_A), "domain_b": list(DOMAIN_B),
                     "hidden_transform": TRANSFORM_DESCRIPTION}
        self.source = UnpairedSource(domain_a, domain_b, c.crop)
        self.facts["data"] = facts
        self.facts["held_out"] = HELD_OUT_DESCRIPTION
        self.facts["loss"] = (f"{c.adv_weight:g} * {c.adversarial} + {c.cycle_weight:g} * cycle L1 + "
                              f"{c.identity_weight * c.cycle_weight:g} * identity L1; pool {c.pool_size}")
        context.note(f"cyclegan loss: {self.facts['loss']}; data: {facts['source']} (image pools restart empty on resume)")

    def make_batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        if self.source is None:
            raise RuntimeError("setup_training() must run before make_batch()")
        gen = step_generator(self.config.seed, step, rank)
        a, b = self.source.batch(self.config.batch_size, gen)
        return a, b, gen  # the same generator then drives the image pools

    def g_losses(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Generator losses on [-1, 1] batches (discriminators frozen), with the fakes for the pools."""
        c = self.config
        fake_b, fake_a = self.g_ab(a), self.g_ba(b)
        rec_a, rec_b = self.g_ba(fake_b), self.g_ab(fake_a)
        for d in (self.d_a, self.d_b):
            d.requires_grad_(False)
        try:
            adv_ab = self.objective.g_loss(self.d_b(fake_b), b)
            adv_ba = self.objective.g_loss(self.d_a(fake_a), a)
        finally:
            for d in (self.d_a, self.d_b):
                d.requires_grad_(True)
        cycle = F.l1_loss(rec_a, a) + F.l1_loss(rec_b, b)
        parts = {"adv_ab": adv_ab, "adv_ba": adv_ba, "cycle": cycle}
        total = c.adv_weight * (adv_ab + adv_ba) + c.cycle_weight * cycle
        if c.identity_weight > 0:
            identity = F.l1_loss(self.g_ab(b), b) + F.l1_loss(self.g_ba(a), a)
            parts["identity"] = identity
            total = total + c.identity_weight * c.cycle_weight * identity
        parts["g"] = total
        parts["fake_a"], parts["fake_b"] = fake_a, fake_b
        return parts

    def d_loss(self, d: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One discriminator's loss: real vs (pooled, detached) fakes (lsgan's is already halved, as the paper)."""
        return self.objective.d_loss(d(real), d(fake.detach()))

    def train_step(self, batch: Any, step: int) -> dict[str, float]:
        a, b, gen = batch
        a, b = a.to(self.device) * 2.0 - 1.0, b.to(self.device) * 2.0 - 1.0
        parts = self.g_losses(a, b)
        self.optimize("g", parts["g"])
        fake_a = self.pool_a.query(parts.pop("fake_a"), gen).to(self.device)
        fake_b = self.pool_b.query(parts.pop("fake_b"), gen).to(self.device)
        loss_d_a, loss_d_b = self.d_loss(self.d_a, a, fake_a), self.d_loss(self.d_b, b, fake_b)
        self.optimize("d", loss_d_a + loss_d_b)
        out = {f"loss_{k}": float(v.detach()) for k, v in parts.items()}
        out.update(loss_d_a=float(loss_d_a.detach()), loss_d_b=float(loss_d_b.detach()))
        return out

    # -- evaluation and pictures ----------------------------------------------------------------------
    def generator(self, direction: str) -> torch.nn.Module:
        """G_AB for "ab", G_BA for "ba"."""
        if direction not in DIRECTIONS:
            raise GanserveError(f"direction must be ab or ba, got {direction!r}")
        return self.g_ab if direction == "ab" else self.g_ba

    @torch.no_grad()
    def _predict(self, direction: str, x: np.ndarray) -> np.ndarray:
        was_training = self.training
        self.eval()
        try:
            return Translator(self.generator(direction))(torch.from_numpy(x).to(self.device)).cpu().numpy()
        finally:
            self.train(was_training)

    def held_out(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Held-out (A, true B) pairs as float HxWx3 in [0, 1], centre-cropped to the generators' spatial multiple."""
        out = []
        for img in held_out_a():
            a = te.center_crop_multiple(img, self.multiple).astype(np.float64) / 255.0
            a = to_uint8(a) / 255.0
            out.append((a, to_uint8(dusk(a)) / 255.0))  # what 8-bit files of both would hold
        return out

    def evaluate_direction(self, direction: str, predict: te.ArrayPredictor) -> dict[str, float]:
        """PSNR/SSIM/L1/sharpness of one direction against the true transform, next to the identity mapping."""
        rows = []
        for a, b in self.held_out():
            src, truth = (a, b) if direction == "ab" else (b, a)
            rows.append(self._direction_row(te.to_hwc(predict(te.to_batch(src))), src, truth))
        return {f"{k}_{direction}": v for k, v in te.mean_figures(rows).items()}

    @staticmethod
    def _direction_row(pred: np.ndarray, src: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        row = te.image_figures(pred, truth)
        row["grid"] = te.grid_strength(pred, truth)  # the upsampling's checkerboard, in grey levels
        row.update({f"identity_{k}": v for k, v in te.image_figures(src, truth).items()})
        return row

    def evaluate(self) -> dict[str, float]:
        # each generator runs twice per image (translation, then the cycle back), shared by all the figures
        rows: dict[str, list[dict[str, float]]] = {"ab": [], "ba": []}
        cyc_a, cyc_b = [], []
        for a, b in self.held_out():
            fake_b, fake_a = self._predict("ab", te.to_batch(a)), self._predict("ba", te.to_batch(b))
            rows["ab"].append(self._direction_row(te.to_hwc(fake_b), a, b))
            rows["ba"].append(self._direction_row(te.to_hwc(fake_a), b, a))
            cyc_a.append(float(np.abs(te.to_hwc(self._predict("ba", fake_b)) - a).mean()))
            cyc_b.append(float(np.abs(te.to_hwc(self._predict("ab", fake_a)) - b).mean()))
        out: dict[str, float] = {}
        for direction, figures in rows.items():
            out.update({f"{k}_{direction}": v for k, v in te.mean_figures(figures).items()})
        out["cycle_l1_a"], out["cycle_l1_b"] = float(np.mean(cyc_a)), float(np.mean(cyc_b))
        out["eval_images"] = float(len(cyc_a))
        return out

    def sample_grid(self) -> np.ndarray:
        held = self.held_out()
        a = te.crops([to_uint8(x) for x, _ in held], 3, 96, 96)
        b = te.crops([to_uint8(y) for _, y in held], 3, 96, 96)
        fake_b = self._predict("ab", a)
        return picture_grid([a, fake_b, b, self._predict("ba", fake_b), self._predict("ba", b)])

    def demo_examples(self, count: int) -> list[DemoExample]:
        names = [e.split(":")[1].split("[")[0] for e in BUILTIN_HELD_OUT]
        out = []
        for i, img in enumerate(held_out_a()[:count]):
            a = te.uint8_crop(img, 256)
            b = dusk_uint8(a)
            src, truth = (a, b) if self.config.export_direction == "ab" else (b, a)
            out.append(DemoExample(name=f"{names[i]}_{self.config.export_direction}", image=src, truth=truth))
        return out

    # -- export ------------------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        c = self.config
        direction = c.export_direction
        module = Translator(copy.deepcopy(self.generator(direction)).cpu().eval()).eval()
        held = self.held_out()
        sources = [to_uint8(a if direction == "ab" else b) for a, b in held]
        small, larger = te.crops(sources, 1, 64, 64), te.crops(sources, 2, 92, 120)

        def evaluate(predictor: Any) -> dict[str, float]:
            return self.evaluate_direction(direction, lambda x: predictor({"image": x})["translated"])

        def calibration() -> Any:
            source = UnpairedSource(*builtin_domains(), 64)
            return seeded_feeds(lambda gen: {"image": source.batch(1, gen)[0 if direction == "ab" else 1].numpy()})

        name = "G_AB (A -> B)" if direction == "ab" else "G_BA (B -> A)"
        architecture = f"{self.model_name} {name}: {describe_network(self.generator(direction))}"
        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(small),),
            inputs=[TensorSpec("image", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=[TensorSpec("translated", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="translation",
            architecture=architecture,
            scale=1,
            spatial_multiple=self.multiple,
            # instance norm takes whole-image statistics, and the residual stack sees ~100 px around each pixel:
            # tiles would not reproduce the whole-image output, so the server never tiles it
            tile_safe=False,
            dynamic_spatial=True,
            parity_inputs=[{"image": small}, {"image": larger}],
            evaluate=evaluate,
            quality_key=f"psnr_{direction}",
            calibration=calibration,
            card_extra=self._card_extra(direction),
        )

    def _card_extra(self, direction: str) -> dict[str, Any]:
        return self.card_facts(
            "RGB in [0, 1] in and out (output clamped)",
            {"source": "builtin unpaired", "hidden_transform": TRANSFORM_DESCRIPTION},
            direction=direction, held_out=HELD_OUT_DESCRIPTION, loss=self.run_metrics().get("loss"))
