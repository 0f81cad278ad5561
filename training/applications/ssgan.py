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
Networks: ``training/networks/ssgan.py``; losses: ``training/objectives/ssgan.py``; held-out evaluation:
``training/applications/ssgan_eval.py``. This module holds the config and the application.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ganserve.core.image_metrics import to_uint8
from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.core.export_spec import ExportSpec
from ganserve.training.application import Application, DemoExample, TrainContext, update_average
from ganserve.training.config import CommonConfig
from ganserve.training.data.augment import random_shift
from ganserve.training.data.digits import SemiSupervisedSplit, semi_supervised_split
from ganserve.training.data.images import step_generator
from ganserve.training.applications.ssgan_eval import accuracy_report, confusion_matrix
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.registry import network_arguments
from ganserve.training.networks.specs import network_field
from ganserve.training.objectives.ssgan import (
    consistency_loss,
    entropy_loss,
    feature_matching_loss,
    log_d_real,
    supervised_loss,
    unsupervised_loss,
)
from ganserve.training.registry import register_model


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
    # the classifier: ssgan-mlp (the paper's MNIST model; widths = hidden units, hidden_noise on each layer) or
    # ssgan-conv (its CIFAR-10 model scaled to 8x8; widths = channels per stage, dropout after each), noise on the input
    discriminator: dict[str, Any] = network_field("ssgan-mlp", widths=[500, 250, 250], input_noise=0.3,
                                                  hidden_noise=0.5)
    ema_decay: float = 0.0  # > 0: evaluate and export an exponential moving average of the classifier's weights
    generator: dict[str, Any] = network_field("ssgan-generator", widths=[500, 500])
    z_dim: int = 100
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
        if min(config.unsup_weight, config.entropy_weight, config.consistency_weight, config.consistency_shift,
               config.consistency_rampup) < 0:
            raise GanserveError("unsup_weight, entropy_weight and the consistency_* options must be >= 0")
        if not 0.0 <= config.ema_decay < 1.0:
            raise GanserveError(f"ema_decay must be in [0, 1), got {config.ema_decay}")
        self.split: SemiSupervisedSplit | None = None
        self.image_shape, self.classes = self._data_shape()
        for name in ("shift", "consistency_shift"):
            if not 0 <= getattr(config, name) < min(self.image_shape[1:]):
                raise GanserveError(f"{name} must be >= 0 and smaller than the image, got {getattr(config, name)}")
        self.discriminator: nn.Module = build_network(config.discriminator, "discriminator", classes=self.classes,
                                                      **self._image_argument(config.discriminator))
        # the weights evaluated and exported when ema_decay > 0 (a checkpointed copy, never trained directly)
        self.ema = copy.deepcopy(self.discriminator).requires_grad_(False) if config.ema_decay > 0 else None
        self.generator = build_network(config.generator, "generator", z_dim=config.z_dim,
                                       shape=self.image_shape) if config.gan else None

    def _image_argument(self, spec: dict[str, Any]) -> dict[str, int]:
        """What the classifier learns the image size from: ``in_features`` (flattened) or ``in_channels`` (conv)."""
        accepted = network_arguments(spec["type"]) or {}
        if "in_features" in accepted:
            return {"in_features": int(np.prod(self.image_shape))}
        return {"in_channels": self.image_shape[0]} if "in_channels" in accepted else {}

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
        return np.repeat(to_uint8(grid)[:, :, None], 3, axis=2)

    # -- export ---------------------------------------------------------------------------------------------
    def demo_examples(self, count: int) -> list[DemoExample]:
        """The first held-out digits of each class in turn (8-bit grey, as a PNG carries them) with their labels."""
        held = self.data_split().held_out
        order = [int(i) for c in range(self.data_split().classes) for i in np.flatnonzero(held.labels == c)[:1]]
        examples = []
        for i in order[:count]:
            grey = to_uint8(held.images[i][0])
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
        return ExportSpec(
            module=module,
            example_inputs=(torch.from_numpy(held.images[:2]),),
            inputs=[TensorSpec("image", list(self.image_shape), "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=[TensorSpec("probabilities", [self.classes], "FP32", "probabilities", "NC", None, labels)],
            task="classification",
            architecture=(f"{self.model_name}: {kind}; {describe_network(self.discriminator)} on "
                          f"{'x'.join(map(str, self.image_shape[1:]))} grey digits"
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
