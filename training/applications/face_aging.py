"""Face aging: a feed-forward age-conditional GAN that keeps identity (after Antipov et al., ICIP 2017, and the
identity-preserved conditional GAN of Wang et al., CVPR 2018).

Registered as ``face-aging``. The generator maps (face, target age group) to the face at that age in one forward
pass, so the served model is one ONNX call:
- generator: a small U-Net (64 -> 32 -> 16 -> 32 -> 64) fed the image with the one-hot age group as six extra
  planes, and the group again through feature-wise affine conditioning (FiLM) in the residual blocks at 16x16; it
  predicts a residual over its input (it starts as the identity map);
- discriminator: a projection discriminator (Miyato & Koyama 2018) conditioned on the age group, spectral norm;
- generator loss = adversarial (hinge by default) + age loss (cross-entropy of the loss network's age head on the
  output vs the target group) + identity loss (1 - cosine of the loss network's identity features of output and
  input) + reconstruction (L1 between the input and the output asked for the input's own group, on a quarter of each
batch to save time).
The loss network is trained on training identities only (``training/applications/face_judges.py``); evaluation uses the
independent judges trained on another identity pool. Training is unpaired: the true render at the target age is
never used by the losses, only by the evaluation, so the same recipe trains on a UTKFace-named folder.
Images are RGB in [0, 1] at 64x64; the age condition is a one-hot vector over ``AGE_GROUPS``.
Networks: ``training/networks/face_aging.py``; losses: ``training/objectives/face_aging.py``; held-out evaluation:
``training/applications/face_aging_eval.py``. This module holds the config and the application.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ganserve.core.image_metrics import to_uint8
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec
from ganserve.core.shipped import from_shipped
from ganserve.training.application import Application, DemoExample, TrainContext, update_average
from ganserve.training.calibration import CALIBRATION_SEED
from ganserve.training.config import CommonConfig
from ganserve.training.age_groups import AGE_GROUPS, GROUP_CENTRES, age_group
from ganserve.training.data.faces import FaceFolder, identity, load_utkface_folder, render, scene
from ganserve.training.data.images import step_generator
from ganserve.training.applications.face_aging_eval import Judges, evaluate_aging, headline_key, held_out_faces, load_judges
from ganserve.training.applications.face_judges import load_net, render_set
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.face_aging import GROUPS, SIZE, FaceNet, one_hot
from ganserve.training.networks.specs import network_field
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.face_aging import ensemble_losses, jitter, reconstruction_loss
from ganserve.training.registry import register_model

HELD_OUT_DESCRIPTION = ("held-out identities of the face renderer (pool 'held_out', never trained on), each rendered "
                        "at the six group centre ages " + ", ".join(f"{a:g}" for a in GROUP_CENTRES) + " in one scene")
# The age the demo's requests are rendered at, and the targets they cycle through.
DEMO_SOURCE_AGE = 35.0
DEMO_TARGETS = ("60+", "0-18", "50-59", "19-29", "40-49")


def loss_net_paths(text: str) -> list[str]:
    """'a.pt,b.pt' -> ['a.pt', 'b.pt']; a clear error for an empty entry."""
    paths = [part.strip() for part in str(text).split(",")]
    if not all(paths):
        raise GanserveError(f"loss_net must be one file or comma-separated files, got {text!r}")
    return paths


class FaceAgingInference(nn.Module):
    """What gets exported: (image (N,3,64,64) in [0,1], age one-hot (N,6)) -> aged image (N,3,64,64) in [0,1]."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        return self.generator(image, age)


# -- config -----------------------------------------------------------------------------------------------------------
@dataclass
class FaceAgingConfig(CommonConfig):
    """Compact widths for 2 CPU cores; paths name the loss network and the judges (relative to the repository)."""

    generator: dict[str, Any] = network_field("age-unet", channels=16, blocks=3)
    discriminator: dict[str, Any] = network_field("age-projection-discriminator", channels=32)
    adversarial: str = "hinge"  # any name in training.objectives
    adv_weight: float = 1.0
    age_weight: float = 2.0
    id_weight: float = 5.0
    rec_weight: float = 10.0
    # trained on training identities (face_judges); several comma-separated files = an ensemble whose age and
    # identity losses are averaged, so the generator cannot satisfy one network's quirks alone
    loss_net: str = "models/face-judges/loss_net.pt"
    ema_decay: float = 0.0  # > 0: evaluate and export an exponential moving average of the generator's weights
    age_judge: str = "models/face-judges/age_judge.pt"  # independent judges; empty = evaluate without them
    id_judge: str = "models/face-judges/id_judge.pt"
    train_identities: int = 500  # renderer identities the generator trains on
    renders_per_identity: int = 8  # random ages and scenes per identity
    eval_identities: int = 16
    batch_size: int = 16
    lr: float = 2e-4
    d_lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    log_every: int = 25
    eval_every: int = 0
    sample_every: int = 200
    ckpt_every: int = 200


# -- the application ------------------------------------------------------------------------------------------------
@register_model("face-aging", FaceAgingConfig)
class FaceAgingApp(Application):
    """Age-conditional generator + projection discriminator, with identity and age losses from the loss network."""

    config: FaceAgingConfig

    def __init__(self, config: FaceAgingConfig) -> None:
        super().__init__(config)
        if config.batch_size < 2 or config.eval_identities < 2:
            raise GanserveError("batch_size and eval_identities must be >= 2")
        if config.train_identities < 1 or config.renders_per_identity < 1:
            raise GanserveError("train_identities and renders_per_identity must be >= 1")
        if min(config.adv_weight, config.age_weight, config.id_weight, config.rec_weight) < 0:
            raise GanserveError("loss weights must be >= 0")
        if not 0.0 <= config.ema_decay < 1.0:
            raise GanserveError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
        self.objective = get_objective(config.adversarial)
        self.generator = build_network(config.generator, "generator")
        self.discriminator = build_network(config.discriminator, "discriminator")
        # the weights evaluated and exported when ema_decay > 0 (a checkpointed copy, never trained directly)
        self.ema = copy.deepcopy(self.generator).requires_grad_(False) if config.ema_decay > 0 else None
        self._loss_nets: tuple[FaceNet, ...] = ()  # a tuple, so their frozen weights stay out of the checkpoint
        self.images: torch.Tensor | None = None
        self.groups: torch.Tensor | None = None

    @property
    def loss_nets(self) -> tuple[FaceNet, ...]:
        """The frozen loss network(s) (identity features + age head), once setup_training has loaded them."""
        return self._loss_nets

    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self.gan_optimizers()

    # -- training -------------------------------------------------------------------------------------------------
    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        c = self.config
        # channels-last convolutions train ~25% faster on CPU here; the weights are the same tensors
        self.generator.to(memory_format=torch.channels_last)
        self.discriminator.to(memory_format=torch.channels_last)
        if self.ema is not None:
            self.ema.to(memory_format=torch.channels_last)
        if (c.age_weight > 0 or c.id_weight > 0) and not c.loss_net:
            raise GanserveError("age_weight/id_weight need loss_net (python -m ganserve.training.applications.face_judges)")
        if c.loss_net and (c.age_weight > 0 or c.id_weight > 0):
            self._loss_nets = tuple(load_net(p, "loss_net").to(context.device) for p in loss_net_paths(c.loss_net))
            self.facts["loss_net"] = str(c.loss_net)
        t0 = time.monotonic()
        if c.data_dir:
            folder: FaceFolder = load_utkface_folder(c.data_dir, SIZE)
            self.images = torch.from_numpy(folder.images).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
            self.groups = torch.tensor([age_group(float(a)) for a in folder.ages])
            self.facts["data"] = {"source": f"UTKFace-named folder {c.data_dir}", **folder.facts()}
            context.note(f"faces from {c.data_dir}: {folder.facts()}")
        else:
            faces = render_set("train", c.train_identities, c.renders_per_identity, c.seed)
            self.images, self.groups = faces.images, faces.groups
            self.facts["data"] = {"source": "face renderer, pool 'train'", "identities": c.train_identities,
                                  "renders_per_identity": c.renders_per_identity,
                                  "per_group": torch.bincount(self.groups, minlength=GROUPS).tolist()}
            context.note(f"rendered {len(self.groups)} training faces in {time.monotonic() - t0:.1f} s")
        self.facts["held_out"] = HELD_OUT_DESCRIPTION

    def make_batch(self, step: int, rank: int, world_size: int) -> dict[str, Any]:
        if self.images is None or self.groups is None:
            raise RuntimeError("setup_training() must run before make_batch()")
        gen = step_generator(self.config.seed, step, rank)
        idx = torch.randint(len(self.groups), (self.config.batch_size,), generator=gen)
        x = self.images[idx]
        flip = torch.rand(len(idx), 1, 1, 1, generator=gen) < 0.5
        return {"image": torch.where(flip, x.flip(3), x), "source": self.groups[idx],
                "target": torch.randint(GROUPS, (len(idx),), generator=gen),
                "jitter_seed": int(torch.randint(2**62, (1,), generator=gen))}

    def train_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        c = self.config
        dev = self.device
        x = batch["image"].to(dev).contiguous(memory_format=torch.channels_last)
        s, t = batch["source"].to(dev), batch["target"].to(dev)
        n, r = len(x), max(1, len(x) // 4)  # the reconstruction term uses a quarter of the batch
        both = self.generator(torch.cat([x, x[:r]]), torch.cat([one_hot(t), one_hot(s[:r])]))
        fake, own = both[:n], both[n:]
        # discriminator: real faces with their own group vs generated faces with their target group
        self.discriminator.requires_grad_(True)
        real_logits = self.discriminator(x, s)
        loss_d = self.objective.d_loss(real_logits, self.discriminator(fake.detach(), t))
        self.optimize("d", loss_d)
        # generator
        self.discriminator.requires_grad_(False)
        adv = self.objective.g_loss(self.discriminator(fake, t), real_logits.detach())
        rec = reconstruction_loss(own, x[:r])
        loss_g = c.adv_weight * adv + c.rec_weight * rec
        logs = {"loss_d": float(loss_d.detach()), "loss_adv": float(adv.detach()), "loss_rec": float(rec.detach())}
        if self.loss_nets:
            gen = torch.Generator().manual_seed(batch["jitter_seed"])
            ident, age, hits = ensemble_losses(self.loss_nets, jitter(torch.cat([fake, x]), gen), n, t)
            loss_g = loss_g + c.id_weight * ident + c.age_weight * age
            logs.update({"loss_id": float(ident.detach()), "loss_age": float(age.detach()), "age_acc": hits})
        self.optimize("g", loss_g)
        self._update_ema()
        self.discriminator.requires_grad_(True)
        logs["loss_g"] = float(loss_g.detach())
        return logs

    def _update_ema(self) -> None:
        """The moving average follows every generator update (damps the step-to-step swing)."""
        if self.ema is not None:
            update_average(self.ema, self.generator, self.config.ema_decay)

    def inference_generator(self) -> nn.Module:
        """The weights that are evaluated and exported: the moving average when ema_decay > 0."""
        return self.ema if self.ema is not None else self.generator

    # -- evaluation and pictures ----------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, image: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Generator output (eval mode) for float32 faces (N,3,64,64) in [0,1] and one-hot groups (N,6)."""
        net = self.inference_generator()
        was_training = net.training
        net.eval()
        try:
            out = net(torch.tensor(image, device=self.device), torch.tensor(cond, device=self.device))
        finally:
            net.train(was_training)
        return out.cpu().numpy()

    def judges(self) -> Judges | None:
        """The independent judges named by the config, or None when either path is empty or missing."""
        c = self.config
        if not c.age_judge or not c.id_judge or not from_shipped(c.age_judge).is_file() or not from_shipped(c.id_judge).is_file():
            return None
        return load_judges(str(from_shipped(c.age_judge)), str(from_shipped(c.id_judge)))

    def evaluate(self) -> dict[str, float]:
        return evaluate_aging(self.predict, self.config.eval_identities, self.judges())

    def sample_grid(self) -> np.ndarray:
        """Per held-out identity two rows: input (at 24) then outputs for the six groups; below, the true renders."""
        faces = held_out_faces(self.config.eval_identities)[:4]
        rows = []
        for face in faces:
            src = np.repeat(face[1:2], GROUPS, axis=0)
            out = self.predict(np.ascontiguousarray(src), np.eye(GROUPS, dtype=np.float32))
            rows.append(np.concatenate([face[1], *out], axis=2))
            rows.append(np.concatenate([face[1], *face], axis=2))
        grid = np.concatenate(rows, axis=1).transpose(1, 2, 0)
        return to_uint8(grid)

    def demo_examples(self, count: int) -> list[DemoExample]:
        """Held-out identities rendered at 35, each asked for another age group; truth = the render at that age."""
        examples = []
        for i in range(count):
            f, sc = identity("held_out", i), scene("held_out", i)
            target = DEMO_TARGETS[i % len(DEMO_TARGETS)]
            examples.append(DemoExample(
                name=f"id{i}_to_{target}", image=render(f, DEMO_SOURCE_AGE, sc, SIZE),
                truth=render(f, GROUP_CENTRES[AGE_GROUPS.index(target)], sc, SIZE), condition=target))
        return examples

    # -- export -------------------------------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        c = self.config
        module = FaceAgingInference(copy.deepcopy(self.inference_generator()).cpu().eval()).eval()
        faces = held_out_faces(3)
        one = np.ascontiguousarray(faces[0, 1:2])
        six = np.ascontiguousarray(faces[:, 2:4].reshape(-1, 3, SIZE, SIZE))
        eye = np.eye(GROUPS, dtype=np.float32)

        def evaluate(predictor: Any) -> dict[str, float]:
            return evaluate_aging(lambda x, a: predictor({"image": x, "age": a})["aged"], c.eval_identities,
                                  self.judges())

        def calibration() -> Any:
            faces_t = render_set("train", 8, 2, seed=CALIBRATION_SEED)
            for i in range(0, 16, 4):
                yield {"image": faces_t.images[i : i + 4].numpy(), "age": eye[[i % 6, (i + 1) % 6, (i + 2) % 6, (i + 3) % 6]]}

        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(one), torch.from_numpy(eye[5:6])),
            inputs=[TensorSpec("image", [3, SIZE, SIZE], "FP32", "image", "NCHW", [0.0, 1.0]),
                    TensorSpec("age", [GROUPS], "FP32", "condition", "NC", [0.0, 1.0], list(AGE_GROUPS))],
            outputs=[TensorSpec("aged", [3, SIZE, SIZE], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="face_aging",
            architecture=f"{self.model_name}: {describe_network(self.inference_generator())}",
            tile_safe=False,  # group norm: statistics over the whole face
            dynamic_spatial=False,
            parity_inputs=[{"image": one, "age": eye[0:1]}, {"image": six, "age": eye[[0, 5, 1, 4, 2, 3]]}],
            evaluate=evaluate,
            quality_key=headline_key(self.judges() is not None),
            calibration=calibration,
            card_extra=self._card_extra(),
        )

    def _card_extra(self) -> dict[str, Any]:
        return self.card_facts(
            "RGB in [0, 1], 64x64 faces; age: one-hot over the six groups; output clamped to [0, 1]",
            {"source": "face renderer, pool 'train'"},
            age_groups=list(AGE_GROUPS), held_out=HELD_OUT_DESCRIPTION,
            loss_net=self.run_metrics().get("loss_net", self.config.loss_net),
            judges={"age": self.config.age_judge, "identity": self.config.id_judge},
            generator_weights=(f"moving average (decay {self.config.ema_decay:g})" if self.ema is not None
                               else "as trained"),
            notes="trained on procedural cartoon faces: does not transfer to photographs")
