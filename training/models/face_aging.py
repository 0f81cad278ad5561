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
The loss network is trained on training identities only (``training/models/face_judges.py``); evaluation uses the
independent judges trained on another identity pool. Training is unpaired: the true render at the target age is
never used by the losses, only by the evaluation, so the same recipe trains on a UTKFace-named folder.
Images are RGB in [0, 1] at 64x64; the age condition is a one-hot vector over ``AGE_GROUPS``.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.training.application import Application, DemoExample, TrainContext, update_average
from ganserve.training.config import CommonConfig
from ganserve.training.data.faces import (
    AGE_GROUPS,
    GROUP_CENTRES,
    FaceFolder,
    age_group,
    identity,
    load_utkface_folder,
    render,
    scene,
)
from ganserve.training.data.images import step_generator
from ganserve.core.export_spec import ExportSpec
from ganserve.training.models.face_judges import FaceNet, load_net, render_set, resolve
from ganserve.training.objectives import get_objective
from ganserve.training.registry import register_model

GROUPS = len(AGE_GROUPS)
SIZE = 64
HELD_OUT_DESCRIPTION = ("held-out identities of the face renderer (pool 'held_out', never trained on), each rendered "
                        "at the six group centre ages " + ", ".join(f"{a:g}" for a in GROUP_CENTRES) + " in one scene")
# The age the demo's requests are rendered at, and the targets they cycle through.
DEMO_SOURCE_AGE = 35.0
DEMO_TARGETS = ("60+", "0-18", "50-59", "19-29", "40-49")

# Maps (N, 3, 64, 64) float32 faces in [0, 1] and (N, 6) one-hot groups to (N, 3, 64, 64) outputs.
AgePredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


# -- networks ----------------------------------------------------------------------------------------------------
def one_hot(groups: torch.Tensor) -> torch.Tensor:
    """Group indices (N,) -> float one-hot rows (N, 6)."""
    return F.one_hot(groups.long(), GROUPS).float()


class CondResBlock(nn.Module):
    """conv-GN-ReLU-conv-GN, then a per-channel scale and shift computed from the age group (FiLM), plus the skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GroupNorm(8, channels),
        )
        self.film = nn.Linear(GROUPS, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(cond)[:, :, None, None].chunk(2, dim=1)
        return x + self.body(x) * (1 + gamma) + beta


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


def _fuse(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.ReLU(inplace=True))


class AgeGenerator(nn.Module):
    """(face in [0, 1], one-hot target group) -> face at that age: U-Net with age planes and FiLM blocks."""

    def __init__(self, channels: int = 16, blocks: int = 3) -> None:
        super().__init__()
        if channels < 8 or channels % 8 or blocks < 1:
            raise GanserveError(f"g_channels must be a multiple of 8 (>= 8) and g_blocks >= 1 (got {channels}, {blocks})")
        c = channels
        self.inp = nn.Sequential(nn.Conv2d(3 + GROUPS, c, 3, padding=1), nn.ReLU(inplace=True))
        self.down1, self.down2 = _down(c, 2 * c), _down(2 * c, 4 * c)
        self.blocks = nn.ModuleList(CondResBlock(4 * c) for _ in range(blocks))
        self.up1 = _fuse(4 * c + 2 * c, 2 * c)
        self.up0 = _fuse(2 * c + c, c)
        self.out = nn.Conv2d(c, 3, 3, padding=1)
        with torch.no_grad():  # start near the identity map: a small residual
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def forward(self, image: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = image * 2.0 - 1.0
        planes = cond[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        e0 = self.inp(torch.cat([x, planes], dim=1))
        e1 = self.down1(e0)
        h = self.down2(e1)
        for block in self.blocks:
            h = block(h, cond)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), e1], dim=1))
        h = self.up0(torch.cat([F.interpolate(h, scale_factor=2.0, mode="nearest"), e0], dim=1))
        return ((x + self.out(h)).clamp(-1.0, 1.0) + 1.0) * 0.5


class AgeDiscriminator(nn.Module):
    """Projection discriminator: D(x, y) = w . phi(x) + embed(y) . phi(x); strided convs with spectral norm."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        c = channels
        layers: list[nn.Module] = []
        cin = 3
        for cout in (c, 2 * c, 4 * c, 8 * c):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [spectral_norm(nn.Conv2d(cin, cout, 4, stride=2, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(cin, 1))
        self.embed = spectral_norm(nn.Embedding(GROUPS, cin))

    def forward(self, image: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        phi = self.features(image * 2.0 - 1.0).sum(dim=(2, 3))
        return self.linear(phi).view(-1) + (self.embed(groups.long()) * phi).sum(dim=1)


class FaceAgingInference(nn.Module):
    """What gets exported: (image (N,3,64,64) in [0,1], age one-hot (N,6)) -> aged image (N,3,64,64) in [0,1]."""

    def __init__(self, generator: AgeGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        return self.generator(image, age)


# -- losses ---------------------------------------------------------------------------------------------------------
def identity_loss(features_out: torch.Tensor, features_in: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cosine similarity between (L2-normalised) identity features of output and input."""
    return (1.0 - (F.normalize(features_out, dim=1) * F.normalize(features_in, dim=1)).sum(dim=1)).mean()


def age_loss(age_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the loss network's age-group logits on the output against the target group."""
    return F.cross_entropy(age_logits, targets.long())


def ensemble_losses(nets: tuple[FaceNet, ...], pair: torch.Tensor, n: int,
                    targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Identity and age losses averaged over the loss networks, for a batch of ``n`` outputs then their ``n`` inputs;
    also the share of (output, network) verdicts that name the target group."""
    ident = age = pair.new_zeros(())
    hits = 0.0
    for net in nets:
        emb, _, age_logits = net(pair)
        assert age_logits is not None
        ident = ident + identity_loss(emb[:n], emb[n:].detach())
        age = age + age_loss(age_logits[:n], targets)
        hits += float((age_logits[:n].argmax(1) == targets).float().mean())
    return ident / len(nets), age / len(nets), hits / len(nets)


def loss_net_paths(text: str) -> list[str]:
    """'a.pt,b.pt' -> ['a.pt', 'b.pt']; a clear error for an empty entry."""
    paths = [part.strip() for part in str(text).split(",")]
    if not all(paths):
        raise GanserveError(f"loss_net must be one file or comma-separated files, got {text!r}")
    return paths


def reconstruction_loss(output_own_age: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """L1 between the input and the output asked for the input's own age group (that request returns the input)."""
    return F.l1_loss(output_own_age, image)


def jitter(x: torch.Tensor, generator: torch.Generator, shift: int = 2) -> torch.Tensor:
    """Random mirror and a small shift of the whole batch, so the age/identity losses reward no pixel-exact trick."""
    dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=generator))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    return x.flip(3) if bool(torch.rand((), generator=generator) < 0.5) else x


# -- held-out evaluation -------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def held_out_faces(identities: int) -> np.ndarray:
    """(identities, 6, 3, 64, 64) float32: each held-out identity in its scene at the six group centre ages."""
    faces = [[render(identity("held_out", i), age, scene("held_out", i), SIZE) for age in GROUP_CENTRES]
             for i in range(identities)]
    arr = np.asarray(faces, dtype=np.float32).transpose(0, 1, 4, 2, 3) / 255.0
    arr.flags.writeable = False
    return arr


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


PSNR_CAP = 60.0  # dB for identical images (asking for the input's own group), so means stay finite


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return min(PSNR_CAP, 10.0 * np.log10(1.0 / max(mse, 1e-12)))


@dataclass(eq=False)
class Judges:
    """The independent age-group classifier and identity embedding (trained on the judge identity pool)."""

    age: FaceNet
    ident: FaceNet

    @torch.no_grad()
    def age_of(self, x: np.ndarray) -> np.ndarray:
        """Predicted age group (N,) of faces (N, 3, 64, 64) in [0, 1]."""
        return self.age.age_logits(torch.tensor(x)).argmax(1).numpy()

    @torch.no_grad()
    def embed(self, x: np.ndarray) -> np.ndarray:
        """L2-normalised identity embeddings (N, D) of faces (N, 3, 64, 64) in [0, 1]."""
        return self.ident.features(torch.tensor(x)).numpy()


@functools.lru_cache(maxsize=4)
def _load_judges(age_path: str, id_path: str) -> Judges:
    return Judges(load_net(age_path, "age_judge"), load_net(id_path, "id_judge"))


def pair_outputs(predict: AgePredictor, identities: int, batch: int = 96) -> np.ndarray:
    """Outputs for every held-out identity, source group and target group: (ids, 6 src, 6 tgt, 3, 64, 64)."""
    faces = held_out_faces(identities)
    src = faces.reshape(-1, 3, SIZE, SIZE)
    x = np.repeat(src, GROUPS, axis=0)  # (ids*6*6): source-major, target fastest
    cond = np.tile(np.eye(GROUPS, dtype=np.float32), (len(src), 1))
    out = [np.asarray(predict(np.ascontiguousarray(x[i : i + batch]), cond[i : i + batch]), dtype=np.float32)
           for i in range(0, len(x), batch)]
    return np.concatenate(out).reshape(identities, GROUPS, GROUPS, 3, SIZE, SIZE)


def score_pairs(outputs: np.ndarray, judges: Judges | None) -> dict[str, np.ndarray]:
    """Per (identity, source, target): PSNR/SSIM vs the true render at the target age; judge verdicts if given."""
    ids = outputs.shape[0]
    truth = held_out_faces(ids)
    rows: dict[str, np.ndarray] = {
        "psnr": np.zeros((ids, GROUPS, GROUPS)), "ssim": np.zeros((ids, GROUPS, GROUPS))}
    for i in range(ids):
        for s in range(GROUPS):
            for t in range(GROUPS):
                rows["psnr"][i, s, t] = _psnr(np.clip(outputs[i, s, t], 0, 1), truth[i, t])
                rows["ssim"][i, s, t] = _ssim(np.clip(outputs[i, s, t], 0, 1), truth[i, t])
    if judges is None:
        return rows
    flat = outputs.reshape(-1, 3, SIZE, SIZE)
    targets = np.tile(np.arange(GROUPS), ids * GROUPS)
    rows["age_hit"] = (judges.age_of(flat) == targets).reshape(ids, GROUPS, GROUPS).astype(np.float64)
    true_emb = judges.embed(truth.reshape(-1, 3, SIZE, SIZE)).reshape(ids, GROUPS, -1)
    out_emb = judges.embed(flat).reshape(ids, GROUPS, GROUPS, -1)
    # threshold: 1% false accepts among true renders of different identities (any ages)
    te = true_emb.reshape(ids * GROUPS, -1)
    owner = np.repeat(np.arange(ids), GROUPS)
    tau = float(np.quantile((te @ te.T)[owner[:, None] != owner[None, :]], 0.99))
    # similarity of each output to every identity's true render at the output's target age
    sims = np.einsum("istd,jtd->istj", out_emb, true_emb)  # (ids, src, tgt, ids)
    own = sims[np.arange(ids), :, :, np.arange(ids)]  # (ids, src, tgt): each output against its own identity
    rows["id_verified"] = (own >= tau).astype(np.float64)
    rows["id_rank1"] = (sims.argmax(axis=3) == np.arange(ids)[:, None, None]).astype(np.float64)
    others = sims.copy()
    others[np.arange(ids), :, :, np.arange(ids)] = -np.inf
    rows["id_false_accept"] = (others >= tau).sum(axis=3) / max(ids - 1, 1)
    rows["id_threshold"] = np.full((ids, GROUPS, GROUPS), tau)
    return rows


def summarise(rows: dict[str, np.ndarray], prefix: str = "") -> dict[str, float]:
    """Means over all 36 source->target pairs, and over the 30 pairs that change the age group."""
    changed = ~np.eye(GROUPS, dtype=bool)
    names = {"psnr": "psnr", "ssim": "ssim", "age_hit": "target_age_accuracy", "id_verified": "id_verify_rate",
             "id_rank1": "id_rank1", "id_false_accept": "id_false_accept_rate", "id_threshold": "id_threshold"}
    out: dict[str, float] = {}
    for key, name in names.items():
        if key in rows:
            out[prefix + name] = float(rows[key].mean())
            if key != "id_threshold":
                out[prefix + name + "_changed"] = float(rows[key][:, changed].mean())
    return out


@functools.lru_cache(maxsize=8)
def _baseline(identities: int, judges: Judges | None) -> dict[str, float]:
    """The figures of "return the input unchanged" (computed once per process: they never change)."""
    return summarise(score_pairs(pair_outputs(lambda x, c: x, identities), judges), "input_")


def evaluate_aging(predict: AgePredictor, identities: int, judges: Judges | None) -> dict[str, float]:
    """Held-out figures of ``predict`` next to the "return the input unchanged" baseline (prefix ``input_``).

    "Changed" figures average the 30 pairs that change the age group (the 6 others ask for the input's own group,
    whose truth is the input itself); ``headline_key`` names the one shipping compares.
    """
    start = time.perf_counter()
    model = summarise(score_pairs(pair_outputs(predict, identities), judges))
    out = {**model, **_baseline(identities, judges)}
    out.update({"psnr_gain_changed": model["psnr_changed"] - out["input_psnr_changed"],
           "eval_identities": float(identities), "eval_pairs": float(identities * GROUPS * GROUPS)})
    out["eval_seconds"] = time.perf_counter() - start
    return out


def headline_key(with_judges: bool) -> str:
    """The figure shipping and the model card lead with: the issue's target, target-age accuracy by the independent
    judge over the changed pairs, where the judges are configured; PSNR against the true render without them."""
    return "target_age_accuracy_changed" if with_judges else "psnr_changed"


# -- config -----------------------------------------------------------------------------------------------------------
@dataclass
class FaceAgingConfig(CommonConfig):
    """Compact widths for 2 CPU cores; paths name the loss network and the judges (relative to the repository)."""

    g_channels: int = 16
    g_blocks: int = 3
    d_channels: int = 32
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
        self.generator = AgeGenerator(config.g_channels, config.g_blocks)
        self.discriminator = AgeDiscriminator(config.d_channels)
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
        c = self.config
        return {
            "g": self.adam(self.generator, c.lr),
            "d": self.adam(self.discriminator, c.d_lr),
        }

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
            raise GanserveError("age_weight/id_weight need loss_net (python -m ganserve.training.models.face_judges)")
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

    def inference_generator(self) -> AgeGenerator:
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
        if not c.age_judge or not c.id_judge or not resolve(c.age_judge).is_file() or not resolve(c.id_judge).is_file():
            return None
        return _load_judges(str(resolve(c.age_judge)), str(resolve(c.id_judge)))

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
        return (np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)

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
            faces_t = render_set("train", 8, 2, seed=1234)
            for i in range(0, 16, 4):
                yield {"image": faces_t.images[i : i + 4].numpy(), "age": eye[[i % 6, (i + 1) % 6, (i + 2) % 6, (i + 3) % 6]]}

        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(one), torch.from_numpy(eye[5:6])),
            inputs=[TensorSpec("image", [3, SIZE, SIZE], "FP32", "image", "NCHW", [0.0, 1.0]),
                    TensorSpec("age", [GROUPS], "FP32", "condition", "NC", [0.0, 1.0], list(AGE_GROUPS))],
            outputs=[TensorSpec("aged", [3, SIZE, SIZE], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="face_aging",
            architecture=(f"{self.model_name}: U-Net generator {c.g_channels}-{2 * c.g_channels}-{4 * c.g_channels} "
                          f"channels, {c.g_blocks} FiLM residual blocks, age one-hot as planes + FiLM, 64x64"),
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
