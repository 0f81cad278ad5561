"""Semi-supervised GAN classifier (Salimans et al. 2016, "Improved Techniques for Training GANs", section 5).

The discriminator is a K-class classifier whose K logits l_1..l_K imply a (K+1)-th "fake" class with logit 0, so
D(x) = Z(x) / (Z(x) + 1) with Z(x) = sum_k exp(l_k): the probability that x is real is sigmoid(logsumexp(l)).
Its loss is the supervised cross-entropy on the labelled images plus the unsupervised GAN loss on unlabelled and
generated images; the generator is trained with feature matching on the discriminator's last hidden layer.
Following the paper's MNIST model, the discriminator is an MLP of weight-normalised dense layers (data-dependent
initialisation) with Gaussian noise added to its input and to every hidden layer; the generator is an MLP with
batch norm and softplus and a weight-normalised sigmoid output layer.

Registered as ``ssgan``; ``--set gan=false`` trains the same classifier on the labelled images alone (the
supervised baseline, same steps and batch). Exported as a classifier: grey (N, 1, H, W) in [0, 1] ->
probabilities over the K real classes (softmax of the logits, i.e. p(y | x, real)).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.training.application import Application, DemoExample, TrainContext, update_average
from ganserve.training.config import CommonConfig
from ganserve.training.data.digits import SemiSupervisedSplit, semi_supervised_split
from ganserve.training.data.images import step_generator
from ganserve.core.export_spec import ExportSpec
from ganserve.training.registry import register_model


# -- losses (the paper's section 5) --------------------------------------------------------------------------
def supervised_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the labelled images over the K real classes (the fake class cannot be the label)."""
    return F.cross_entropy(logits, labels)


def log_d_real(logits: torch.Tensor) -> torch.Tensor:
    """log D(x) per image, with D(x) = Z / (Z + 1) and Z = sum_k exp(l_k): logsumexp(l) - softplus(logsumexp(l))."""
    lse = torch.logsumexp(logits, dim=1)
    return lse - F.softplus(lse)


def unsupervised_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (E[-log D(x)] over unlabelled images + E[-log(1 - D(G(z)))] over generated ones).

    -log(1 - D) = log(Z + 1) = softplus(logsumexp(l)); both terms are computed in log space so they never overflow.
    """
    fake_term = F.softplus(torch.logsumexp(logits_fake, dim=1))
    return 0.5 * (-log_d_real(logits_real).mean() + fake_term.mean())


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of p(y | x, real) = softmax(logits) over a batch (in nats): low when the classifier is confident.

    Not in Salimans et al.; an unlabelled-data term of the later GAN-based semi-supervised work (Dai et al. 2017,
    "Good Semi-supervised Learning that Requires a Bad GAN"), off unless ``entropy_weight`` > 0.
    """
    log_p = F.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(dim=1).mean()


def consistency_loss(logits_a: torch.Tensor, logits_b: torch.Tensor) -> torch.Tensor:
    """Mean over images of the squared distance between the class distributions of two views of the same images.

    Not in Salimans et al.: the consistency regularisation of the discriminator in CR-GAN (Zhang et al. 2020), here
    on p(y | x, real) as in the Pi-model (Laine & Aila 2017); the views differ by the discriminator's own noise and,
    with ``consistency_shift``, a translation. Off unless ``consistency_weight`` > 0.
    """
    return (F.softmax(logits_a, dim=1) - F.softmax(logits_b, dim=1)).pow(2).sum(dim=1).mean()


def feature_matching_loss(features_real: torch.Tensor, features_fake: torch.Tensor) -> torch.Tensor:
    """Mean over feature units of the squared difference of batch-mean features (real vs generated)."""
    return (features_real.mean(dim=0) - features_fake.mean(dim=0)).pow(2).mean()


def random_shift(images: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Each image (N, C, H, W) translated by its own random (dy, dx) in [-pixels, pixels], zeros shifted in."""
    if pixels <= 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pixels, pixels, pixels, pixels))
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


# -- evaluation -------------------------------------------------------------------------------------------------
def confusion_matrix(predicted: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def accuracy_report(probabilities: np.ndarray, labels: np.ndarray, classes: int) -> dict[str, float]:
    """Accuracy (the headline), per-class mean recall, and the chance level of the held-out images."""
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(predicted, labels, classes)
    support = matrix.sum(axis=1)
    recall = np.diag(matrix)[support > 0] / support[support > 0]
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "mean_class_recall": float(recall.mean()),
        "chance_accuracy": float(np.max(np.bincount(labels, minlength=classes)) / len(labels)),
    }


# -- networks ---------------------------------------------------------------------------------------------------
class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training mode only (the paper's regulariser on the discriminator's layers)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + self.std * torch.randn_like(x)
        return x


@torch.no_grad()
def _normalising_init(layer: nn.Module, unit_outputs: torch.Tensor) -> None:
    """Set a weight-norm layer's g and bias so its outputs, (units, samples) before g and bias, get mean 0, std 1."""
    mean, std = unit_outputs.mean(dim=1), unit_outputs.std(dim=1) + 1e-6
    layer.g.copy_(1.0 / std)
    layer.bias.copy_(-mean / std)


class WNLinear(nn.Module):
    """Weight-normalised dense layer, w = g * v / ||v|| per output unit (Salimans & Kingma 2016)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_features, in_features) * 0.05)
        self.g = nn.Parameter(torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def weight(self) -> torch.Tensor:
        return self.g[:, None] * self.v / self.v.norm(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight(), self.bias)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Data-dependent init: pick g and b so this layer's outputs on ``x`` have mean 0 and std 1 per unit."""
        _normalising_init(self, F.linear(x, self.v / self.v.norm(dim=1, keepdim=True)).T)


def parse_widths(text: str, what: str) -> list[int]:
    """'500,250,250' -> [500, 250, 250]; a clear error for anything else."""
    try:
        widths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise GanserveError(f"{what} must be comma-separated positive integers, got {text!r}") from exc
    if not widths or min(widths) < 1:
        raise GanserveError(f"{what} must be comma-separated positive integers, got {text!r}")
    return widths


class Discriminator(nn.Module):
    """Noise -> [weight-norm dense -> ReLU -> noise] x L -> weight-norm dense to K logits; also returns features.

    The features (the last hidden layer, before its noise) are what the generator's feature matching compares.
    """

    def __init__(self, in_features: int, widths: list[int], classes: int, input_noise: float, hidden_noise: float):
        super().__init__()
        self.input_noise = GaussianNoise(input_noise)
        dims = [in_features, *widths]
        self.hidden = nn.ModuleList(WNLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.noise = nn.ModuleList(GaussianNoise(hidden_noise) for _ in widths)
        self.head = WNLinear(widths[-1], classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.input_noise(x.flatten(1))
        features = h
        for layer, noise in zip(self.hidden, self.noise):
            features = F.relu(layer(h))
            h = noise(features)
        return self.head(h), features

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Data-dependent weight-norm init, layer by layer on one batch (noise off)."""
        h = x.flatten(1)
        for layer in self.hidden:
            layer.init_from(h)
            h = F.relu(layer(h))
        self.head.init_from(h)


class WNConv2d(nn.Module):
    """Weight-normalised 3x3 (or 1x1) convolution, w = g * v / ||v|| per output channel, with data-dependent init."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel) * 0.05)
        self.g = nn.Parameter(torch.ones(out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride, self.padding = stride, kernel // 2

    def _direction(self) -> torch.Tensor:
        return self.v / self.v.flatten(1).norm(dim=1)[:, None, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.g[:, None, None, None] * self._direction()
        return F.conv2d(x, weight, self.bias, stride=self.stride, padding=self.padding)

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Pick g and b so this layer's outputs on ``x`` have mean 0 and std 1 per channel."""
        t = F.conv2d(x, self._direction(), stride=self.stride, padding=self.padding)
        _normalising_init(self, t.transpose(0, 1).flatten(1))


class ConvDiscriminator(nn.Module):
    """The paper's CIFAR-10 discriminator scaled to 8x8 digits (``d_arch: conv``): input noise, then per width
    two 3x3 weight-norm convolutions and a strided one (leaky ReLU, dropout after each stage), a 1x1 (NiN) layer,
    global average pooling (the features feature matching compares) and a weight-norm dense layer to K logits."""

    def __init__(self, in_channels: int, widths: list[int], classes: int, input_noise: float, dropout: float):
        super().__init__()
        self.input_noise = GaussianNoise(input_noise)
        layers: list[WNConv2d] = []
        channels = in_channels
        for width in widths:
            layers += [WNConv2d(channels, width), WNConv2d(width, width), WNConv2d(width, width, stride=2)]
            channels = width
        layers.append(WNConv2d(channels, channels, kernel=1))
        self.convs = nn.ModuleList(layers)
        self.drop_after = {3 * (i + 1) - 1 for i in range(len(widths))}  # indices of the strided convolutions
        self.dropout = nn.Dropout(dropout)
        self.head = WNLinear(channels, classes)

    def _features(self, x: torch.Tensor, init: bool = False) -> torch.Tensor:
        h = self.input_noise(x)
        for i, conv in enumerate(self.convs):
            if init:
                conv.init_from(h)
            h = F.leaky_relu(conv(h), 0.2)
            if i in self.drop_after:
                h = self.dropout(h)
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self._features(x)
        return self.head(features), features

    @torch.no_grad()
    def init_from(self, x: torch.Tensor) -> None:
        """Data-dependent weight-norm init, layer by layer on one batch (noise and dropout off)."""
        was_training = self.training
        self.eval()
        try:
            self.head.init_from(self._features(x, init=True))
        finally:
            self.train(was_training)


class Generator(nn.Module):
    """z -> [dense -> batch norm -> softplus] x L -> weight-norm dense -> sigmoid, shaped as (N, 1, H, W)."""

    def __init__(self, z_dim: int, widths: list[int], shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        dims = [z_dim, *widths]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.Softplus()]
        self.body = nn.Sequential(*layers)
        self.out = WNLinear(widths[-1], int(np.prod(shape)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.body(z))).view(-1, *self.shape)

    @torch.no_grad()
    def init_from(self, z: torch.Tensor) -> None:
        """Data-dependent init of the weight-normalised output layer on one batch of latents."""
        self.out.init_from(self.body(z))


class ClassifierInference(nn.Module):
    """What gets exported: grey images (N, 1, H, W) in [0, 1] -> probabilities over the K real classes."""

    def __init__(self, discriminator: nn.Module) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits, _ = self.discriminator(image)
        return torch.softmax(logits, dim=1)


# -- config -------------------------------------------------------------------------------------------------
@dataclass
class SSGANConfig(CommonConfig):
    """Defaults: the paper's MNIST recipe scaled to 8x8 digits (values tuned on the validation split)."""

    labels_per_class: int = 10  # labelled images per class (10 -> 100 labels on the digits)
    gan: bool = True  # false = the supervised-only baseline: same classifier, labelled images only
    holdout: str = "test"  # test | validation (carved from the training pool, for tuning)
    test_fraction: float = 0.3  # built-in digits: stratified share held out as the fixed test split
    validation_fraction: float = 0.2  # share of the training pool held out when holdout=validation
    split_seed: int = 0  # fixes the test/validation split independently of the run seed
    d_arch: str = "mlp"  # mlp (the paper's MNIST model) | conv (its CIFAR-10 model, scaled to 8x8)
    d_widths: str = "500,250,250"  # mlp: hidden units per layer; conv: channels per stage (e.g. "64,128")
    dropout: float = 0.5  # conv: dropout after each strided stage
    ema_decay: float = 0.0  # > 0: evaluate and export an exponential moving average of the classifier's weights
    g_widths: str = "500,500"
    z_dim: int = 100
    input_noise: float = 0.3
    hidden_noise: float = 0.5
    unsup_weight: float = 1.0
    shift: int = 0  # > 0: translate every real training image by up to this many pixels (zero fill), both methods
    entropy_weight: float = 0.0  # > 0: add this times the entropy of p(y | x) on unlabelled images to D's loss
    # > 0: add this times consistency_loss between two noisy views of the unlabelled images to D's loss, ramped up
    # linearly over consistency_rampup steps; consistency_shift > 0 also translates the second view (1 px = 12%)
    consistency_weight: float = 0.0
    consistency_shift: int = 0
    consistency_rampup: int = 500
    init_batch: int = 500  # images (and latents) for the data-dependent weight-norm init
    threads: int = 1  # torch threads while training (0 = leave as is): these small MLPs run fastest on one
    batch_size: int = 100  # labelled, unlabelled and generated images per step, each
    lr: float = 3e-3
    beta1: float = 0.5
    lr_schedule: str = "cosine"
    log_every: int = 50
    eval_every: int = 1000
    sample_every: int = 0
    ckpt_every: int = 1000


@dataclass
class SSBatch:
    """One step's data: labelled images and labels, two unlabelled batches, two latent batches, a noise seed, and
    with the consistency term a second view of the first unlabelled batch."""

    x_lab: torch.Tensor
    y_lab: torch.Tensor
    x_unl: torch.Tensor
    x_unl_g: torch.Tensor
    z: torch.Tensor
    z_g: torch.Tensor
    noise_seed: int
    x_unl_view: torch.Tensor | None = None


# -- the application --------------------------------------------------------------------------------------------
@register_model("ssgan", SSGANConfig)
class SSGANApp(Application):
    """Semi-supervised GAN classifier on digits; ``gan=false`` is its supervised-only baseline."""

    config: SSGANConfig

    def __init__(self, config: SSGANConfig) -> None:
        super().__init__(config)
        if config.batch_size < 2 or config.z_dim < 1 or config.init_batch < 2:
            raise GanserveError("batch_size and init_batch must be >= 2 and z_dim >= 1")
        if min(config.input_noise, config.hidden_noise, config.unsup_weight, config.entropy_weight,
               config.consistency_weight, config.consistency_shift, config.consistency_rampup) < 0:
            raise GanserveError("input_noise, hidden_noise, unsup_weight, entropy_weight and the consistency_* "
                                "options must be >= 0")
        if config.d_arch not in ("mlp", "conv"):
            raise GanserveError(f"d_arch must be mlp or conv, got {config.d_arch!r}")
        if not 0.0 <= config.dropout < 1.0 or not 0.0 <= config.ema_decay < 1.0:
            raise GanserveError("dropout and ema_decay must be in [0, 1)")
        self.split: SemiSupervisedSplit | None = None
        self.image_shape, self.classes = self._data_shape()
        for name in ("shift", "consistency_shift"):
            if not 0 <= getattr(config, name) < min(self.image_shape[1:]):
                raise GanserveError(f"{name} must be >= 0 and smaller than the image, got {getattr(config, name)}")
        d_widths = parse_widths(config.d_widths, "d_widths")
        if config.d_arch == "conv":
            self.discriminator: nn.Module = ConvDiscriminator(
                self.image_shape[0], d_widths, self.classes, config.input_noise, config.dropout)
        else:
            self.discriminator = Discriminator(
                int(np.prod(self.image_shape)), d_widths, self.classes, config.input_noise, config.hidden_noise)
        # the weights evaluated and exported when ema_decay > 0 (a checkpointed copy, never trained directly)
        self.ema = copy.deepcopy(self.discriminator).requires_grad_(False) if config.ema_decay > 0 else None
        self.generator = Generator(config.z_dim, parse_widths(config.g_widths, "g_widths"), self.image_shape) if config.gan else None

    def _data_shape(self) -> tuple[tuple[int, int, int], int]:
        """Image shape and class count, without reading a user's files when the built-in digits are used."""
        if not self.config.data_dir:
            return (1, 8, 8), 10
        split = self.data_split()
        return split.labeled.shape, split.classes

    def data_split(self) -> SemiSupervisedSplit:
        """The labelled/unlabelled/held-out split of this config (loaded once)."""
        if self.split is None:
            c = self.config
            self.split = semi_supervised_split(
                c.data_dir, c.labels_per_class, c.seed, c.holdout, c.test_fraction, c.validation_fraction, c.split_seed
            )
        return self.split

    # -- training -----------------------------------------------------------------------------------------
    def build_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        opts = {"d": self.adam(self.discriminator, c.lr)}
        if self.generator is not None:
            opts["g"] = self.adam(self.generator, c.lr)
        return opts

    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        if self.config.threads > 0:
            torch.set_num_threads(self.config.threads)
        split = self.data_split()
        self.facts["data"] = {**split.facts(), "labels_per_class": self.config.labels_per_class}
        c = self.config
        ent = f" + {c.entropy_weight:g} x entropy on unlabelled" if c.entropy_weight > 0 else ""
        if c.consistency_weight > 0:
            ent += f" + {c.consistency_weight:g} x consistency on unlabelled (shift {c.consistency_shift})"
        self.facts["method"] = f"ssgan (feature matching{ent})" if self.generator is not None else "supervised only (baseline)"
        if not context.resuming:
            # the baseline sees only its labelled images, also for the weight-norm init statistics
            pool = split.unlabeled if self.generator is not None else split.labeled
            gen = torch.Generator().manual_seed(self.config.seed)
            pick = torch.randperm(len(pool.labels), generator=gen)[: self.config.init_batch]
            self.discriminator.init_from(torch.from_numpy(pool.images[pick.numpy()]).to(context.device))
            if self.generator is not None:
                z = torch.rand(self.config.init_batch, self.config.z_dim, generator=gen).to(context.device)
                self.generator.init_from(z)
            if self.ema is not None:
                self.ema.load_state_dict(self.discriminator.state_dict())
        context.note(
            f"{self.facts['method']}: {split.facts()['labeled']} labelled, {split.facts()['unlabeled']} unlabelled "
            f"training images from {split.labeled.source}; evaluation on the {split.held_out_name} split "
            f"({split.facts()['held_out_images']} images)"
        )

    def make_batch(self, step: int, rank: int, world_size: int) -> SSBatch:
        split = self.data_split()
        gen = step_generator(self.config.seed, step, rank)
        b, z_dim = self.config.batch_size, self.config.z_dim
        lab = torch.randint(len(split.labeled.labels), (b,), generator=gen).numpy()
        unl = torch.randint(len(split.unlabeled.labels), (2, b), generator=gen).numpy()
        move = lambda x: random_shift(torch.from_numpy(x), self.config.shift, gen)  # noqa: E731
        batch = SSBatch(
            x_lab=move(split.labeled.images[lab]),
            y_lab=torch.from_numpy(split.labeled.labels[lab]),
            x_unl=move(split.unlabeled.images[unl[0]]),
            x_unl_g=move(split.unlabeled.images[unl[1]]),
            z=torch.rand(b, z_dim, generator=gen),
            z_g=torch.rand(b, z_dim, generator=gen),
            noise_seed=int(torch.randint(2**62, (1,), generator=gen)),
        )
        if self.config.consistency_weight > 0 and self.generator is not None:  # drawn last: other fields unchanged
            batch.x_unl_view = random_shift(batch.x_unl, self.config.consistency_shift, gen)
        return batch

    def train_step(self, batch: SSBatch, step: int) -> dict[str, float]:
        # the noise layers draw from a step-seeded RNG, so a resumed run repeats the same steps exactly
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch.noise_seed)
            return self._train_step(batch, step)

    def consistency_ramp(self, step: int) -> float:
        """The consistency weight at ``step``: linear from 0 to consistency_weight over consistency_rampup steps."""
        c = self.config
        return c.consistency_weight * min(1.0, (step + 1) / c.consistency_rampup) if c.consistency_rampup else c.consistency_weight

    def _train_step(self, batch: SSBatch, step: int) -> dict[str, float]:
        dev = self.device
        x_lab, y_lab = batch.x_lab.to(dev), batch.y_lab.to(dev)
        logits_lab, _ = self.discriminator(x_lab)
        loss_sup = supervised_loss(logits_lab, y_lab)
        if self.generator is None:
            self.optimize("d", loss_sup)
            self._update_ema()
            return {"loss_sup": float(loss_sup.detach())}
        logits_unl, _ = self.discriminator(batch.x_unl.to(dev))
        with torch.no_grad():
            fake = self.generator(batch.z.to(dev))
        logits_fake, _ = self.discriminator(fake)
        loss_unsup = unsupervised_loss(logits_unl, logits_fake)
        loss_ent = entropy_loss(logits_unl)
        loss_d = loss_sup + self.config.unsup_weight * loss_unsup + self.config.entropy_weight * loss_ent
        loss_cons = None
        if batch.x_unl_view is not None:
            loss_cons = consistency_loss(logits_unl, self.discriminator(batch.x_unl_view.to(dev))[0])
            loss_d = loss_d + self.consistency_ramp(step) * loss_cons
        self.optimize("d", loss_d)
        self._update_ema()

        _, features_real = self.discriminator(batch.x_unl_g.to(dev))
        _, features_fake = self.discriminator(self.generator(batch.z_g.to(dev)))
        loss_fm = feature_matching_loss(features_real.detach(), features_fake)
        self.optimize("g", loss_fm)  # D's gradients from this backward are cleared by its next optimize()
        with torch.no_grad():
            d_real = log_d_real(logits_unl).exp().mean()
            d_fake = log_d_real(logits_fake).exp().mean()
        logs = {"loss_sup": float(loss_sup.detach()), "loss_unsup": float(loss_unsup.detach()),
                "entropy_unl": float(loss_ent.detach()),
                "loss_fm": float(loss_fm.detach()), "d_real": float(d_real), "d_fake": float(d_fake)}
        if loss_cons is not None:
            logs["loss_cons"] = float(loss_cons.detach())
        return logs

    def _update_ema(self) -> None:
        """The moving average follows every classifier update (Polyak averaging, as the paper's CIFAR model evaluates)."""
        if self.ema is not None:
            update_average(self.ema, self.discriminator, self.config.ema_decay)

    def classifier(self) -> nn.Module:
        """The weights that are evaluated and exported: the moving average when ema_decay > 0."""
        return self.ema if self.ema is not None else self.discriminator

    # -- evaluation and pictures --------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities (N, K) of images (N, 1, H, W) in [0, 1], in eval mode (no noise)."""
        net = self.classifier()
        was_training = net.training
        net.eval()
        try:
            logits, _ = net(torch.from_numpy(images).to(self.device))
        finally:
            net.train(was_training)
        return torch.softmax(logits, dim=1).cpu().numpy()

    def _held_out_report(self, predict: Callable[[np.ndarray], np.ndarray]) -> dict[str, float]:
        held = self.data_split().held_out
        return accuracy_report(predict(held.images), held.labels, self.classes)

    def evaluate(self) -> dict[str, float]:
        split = self.data_split()
        probabilities = self.predict(split.held_out.images)
        report = accuracy_report(probabilities, split.held_out.labels, self.classes)
        matrix = confusion_matrix(probabilities.argmax(axis=1), split.held_out.labels, self.classes)
        self.facts["confusion_matrix"] = matrix.tolist()
        self.facts["evaluated_on"] = split.held_out_name
        train_acc = float(np.mean(self.predict(split.labeled.images).argmax(1) == split.labeled.labels))
        return {**report, "labeled_train_accuracy": train_acc}

    def sample_grid(self) -> np.ndarray:
        """Top row: generated digits (fixed latents); bottom row: held-out digits; 4x nearest upscale, grey as RGB."""
        held = self.data_split().held_out.images[:10]
        rows = [held]
        if self.generator is not None:
            was_training = self.generator.training
            self.generator.eval()
            with torch.no_grad():
                z = torch.rand(10, self.config.z_dim, generator=torch.Generator().manual_seed(7)).to(self.device)
                rows.insert(0, self.generator(z).cpu().numpy())
            self.generator.train(was_training)
        grid = np.concatenate([np.concatenate(list(r[:, 0]), axis=1) for r in rows], axis=0)
        grid = np.kron(np.clip(grid, 0.0, 1.0), np.ones((4, 4)))
        return np.repeat(np.rint(grid * 255).astype(np.uint8)[:, :, None], 3, axis=2)

    # -- export ---------------------------------------------------------------------------------------------
    def demo_examples(self, count: int) -> list[DemoExample]:
        """The first held-out digits of each class in turn (8-bit grey, as a PNG carries them) with their labels."""
        held = self.data_split().held_out
        order = [int(i) for c in range(self.data_split().classes) for i in np.flatnonzero(held.labels == c)[:1]]
        examples = []
        for i in order[:count]:
            grey = np.rint(np.clip(held.images[i][0], 0.0, 1.0) * 255.0).astype(np.uint8)
            examples.append(DemoExample(name=f"digit{i}", image=grey, label=str(int(held.labels[i]))))
        return examples

    def export_spec(self) -> ExportSpec:
        split = self.data_split()
        module = ClassifierInference(copy.deepcopy(self.classifier()).cpu().eval()).eval()
        held, pool = split.held_out, split.unlabeled
        labels = [str(i) for i in range(self.classes)]

        def evaluate(predictor: Any) -> dict[str, float]:
            return self._held_out_report(lambda x: predictor({"image": x})["probabilities"])

        def calibration() -> Any:
            for i in range(0, 64, 16):
                yield {"image": pool.images[i : i + 16]}

        c = self.config
        kind = "semi-supervised GAN (feature matching)" if c.gan else "supervised-only baseline"
        net = "CNN, channels" if c.d_arch == "conv" else "MLP, units"
        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(held.images[:2]),),
            inputs=[TensorSpec("image", list(self.image_shape), "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=[TensorSpec("probabilities", [self.classes], "FP32", "probabilities", "NC", None, labels)],
            task="classification",
            architecture=(f"{self.model_name}: {kind}; classifier {net} {c.d_widths} (weight norm) -> "
                          f"{self.classes} logits on {'x'.join(map(str, self.image_shape[1:]))} grey digits"
                          + (f"; weights: moving average (decay {c.ema_decay})" if self.ema is not None else "")),
            tile_safe=False,
            dynamic_spatial=False,
            parity_inputs=[{"image": held.images[:1]}, {"image": held.images[1:9]}],
            evaluate=evaluate,
            quality_key="accuracy",
            calibration=calibration,
            card_extra=self._card_extra(),
        )

    def _card_extra(self) -> dict[str, Any]:
        metrics = self.run_metrics()
        return self.card_facts(
            "grey (N, 1, H, W) in [0, 1], ink bright on dark; output: probabilities over the real classes",
            metrics.get("data") or self.data_split().facts(),
            method=metrics.get("method"), confusion_matrix=metrics.get("confusion_matrix"))
