"""What the digit generative models share: their config (naming the conv networks, ``training/networks/dcgan.py``),
and an Application base that gives every one of them the same data, metrics, sample grids and ONNX export
(latent [+ class] -> image in [0, 1]).

Images are N x 1 x S x S in [0, 1] everywhere (S = 8, 16 or 32); decoders end in logits and a sigmoid, which is
the DCGAN tanh output up to an affine map. Discriminators rescale their input to [-1, 1] themselves.
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
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.config import CommonConfig
from ganserve.training.data import digits_gen
from ganserve.training.data.images import step_generator
from ganserve.training.eval.gen_metrics import digits_metrics
from ganserve.core.export_spec import ExportSpec
from ganserve.training.networks import build_network, describe_network
from ganserve.training.networks.specs import network_field

EVAL_SEED = 4321
LABELS = [str(i) for i in range(digits_gen.CLASSES)]


@dataclass
class DigitsGenConfig(CommonConfig):
    """Shared settings: digits at ``image_size`` px, latent size, network width, and the evaluation sample count."""

    image_size: int = 16  # 8, 16 or 32
    latent_dim: int = 16
    channels: int = 32  # base width of every conv network
    # the networks every conv decoder (latent -> image) and conv encoder (image -> features -> head) of the
    # application is; the application sets their sizes from latent_dim, channels and image_size
    decoder_net: dict[str, Any] = network_field("conv-decoder")
    encoder_net: dict[str, Any] = network_field("conv-encoder")
    batch_size: int = 64
    lr: float = 2e-4
    beta1: float = 0.5
    eval_samples: int = 1000
    eval_every: int = 0
    sample_every: int = 500
    ckpt_every: int = 500


def one_hot(labels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(labels, digits_gen.CLASSES).float()


def label_planes(labels: torch.Tensor, size: int) -> torch.Tensor:
    """One-hot class planes N x 10 x S x S, concatenated to an image to condition a conv network."""
    return one_hot(labels)[:, :, None, None].expand(-1, -1, size, size)


def picture(images: torch.Tensor, columns: int = 8) -> np.ndarray:
    """N x 1 x S x S in [0, 1] -> one HxWx3 uint8 grid with 1 px gaps."""
    n, _, s, _ = images.shape
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (s + 1) + 1, columns * (s + 1) + 1), 255, np.uint8)
    arr = to_uint8(images.detach().cpu().numpy()[:, 0])
    for i in range(n):
        r, c = divmod(i, columns)
        canvas[1 + r * (s + 1): 1 + r * (s + 1) + s, 1 + c * (s + 1): 1 + c * (s + 1) + s] = arr[i]
    return np.repeat(canvas[:, :, None], 3, axis=2)


class GeneratorInference(nn.Module):
    """What gets exported: latent (and a one-hot class when conditional) -> image N x 1 x S x S in [0, 1]."""

    def __init__(self, sampler: nn.Module) -> None:
        super().__init__()
        self.sampler = sampler

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.sampler(*inputs))


# -- the shared application -----------------------------------------------------------------------------------
class DigitsGenApp(Application):
    """Base for the digit models. Subclasses build networks and implement ``sampler()`` (an nn.Module mapping
    latent [, one-hot class] to logits), ``build_optimizers`` and ``train_step``; ``conditional`` says whether the
    sampler takes a class."""

    config: DigitsGenConfig
    conditional = False

    def __init__(self, config: DigitsGenConfig) -> None:
        super().__init__(config)
        digits_gen.check_size(config.image_size)
        if config.latent_dim < 1 or config.channels < 1 or config.batch_size < 2:
            raise GanserveError("latent_dim and channels must be >= 1 and batch_size >= 2")
        if config.eval_samples < 20:
            raise GanserveError(f"eval_samples must be >= 20, got {config.eval_samples}")

    def sampler(self) -> nn.Module:
        """latent [, one-hot class] -> logits N x 1 x S x S."""
        raise NotImplementedError

    def build_decoder(self, in_dim: int) -> nn.Module:
        """A conv decoder of the config's type: ``in_dim`` inputs -> image logits at the config's size and width."""
        c = self.config
        return build_network(c.decoder_net, "decoder_net", in_dim=in_dim, channels=c.channels, size=c.image_size)

    def build_encoder(self, out_dim: int, in_planes: int = 1, norm: bool = True) -> nn.Module:
        """A conv encoder of the config's type: image (+ condition planes) -> ``out_dim`` outputs."""
        c = self.config
        return build_network(c.encoder_net, "encoder_net", out_dim=out_dim, channels=c.channels, size=c.image_size,
                             in_planes=in_planes, norm=norm)

    def setup_training(self, context: TrainContext) -> None:
        super().setup_training(context)
        self.facts["data"] = digits_gen.DESCRIPTION.format(size=self.config.image_size)

    def make_batch(self, step: int, rank: int, world_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Generator]:
        """Real images, their labels, and the generator that draws this step's noise (all from (seed, step, rank))."""
        gen = step_generator(self.config.seed, step, rank)
        x, y = digits_gen.batch(self.config.image_size, self.config.batch_size, gen)
        return x, y, gen

    def noise(self, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.config.latent_dim), generator=gen).to(self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latents (and class labels for conditional models), networks in eval mode."""
        module = self.sampler()
        was = module.training
        module.eval()
        try:
            args = (z.to(self.device),) + ((one_hot(labels).to(self.device),) if self.conditional else ())
            return torch.sigmoid(module(*args)).cpu()
        finally:
            module.train(was)

    def eval_samples(self) -> torch.Tensor:
        """``eval_samples`` images from fixed noise (classes balanced for conditional models)."""
        n = self.config.eval_samples
        z = torch.randn((n, self.config.latent_dim), generator=torch.Generator().manual_seed(EVAL_SEED))
        return torch.cat([self.generate(zc, yc) for zc, yc in zip(z.split(500), self._labels(n).split(500))])

    def _labels(self, n: int) -> torch.Tensor:
        return torch.arange(n) % digits_gen.CLASSES

    def evaluate(self) -> dict[str, float]:
        return digits_metrics(self.eval_samples(), self.config.image_size)

    def sample_grid(self) -> np.ndarray:
        """64 samples from fixed noise, 8 per row; conditional models: 80, one column per class 0-9."""
        n, columns = (80, digits_gen.CLASSES) if self.conditional else (64, 8)
        z = torch.randn((n, self.config.latent_dim), generator=torch.Generator().manual_seed(EVAL_SEED + 1))
        return picture(self.generate(z, self._labels(n)), columns)

    def demo_examples(self, count: int) -> list[DemoExample]:
        """Seeds to generate from; conditional models ask for each class in turn."""
        return [DemoExample(name=f"seed{i}", seed=i, condition=LABELS[i % len(LABELS)] if self.conditional else "")
                for i in range(count)]

    def export_spec(self) -> ExportSpec:
        c = self.config
        module = GeneratorInference(copy.deepcopy(self.sampler()).cpu().eval()).eval()
        gen = torch.Generator().manual_seed(EVAL_SEED)
        z = torch.randn((2, c.latent_dim), generator=gen)
        inputs = [TensorSpec("z", [c.latent_dim], "FP32", "latent", "NC")]
        examples: tuple[torch.Tensor, ...] = (z,)
        if self.conditional:
            inputs.append(TensorSpec("class", [digits_gen.CLASSES], "FP32", "condition", "NC", [0.0, 1.0], LABELS))
            examples = (z, one_hot(torch.tensor([3, 7])))
        parity = [{s.name: t.numpy() for s, t in zip(inputs, examples)}]
        conditional = self.conditional

        def evaluate(predictor: Any) -> dict[str, float]:
            n = min(c.eval_samples, 500)
            feeds = {"z": torch.randn((n, c.latent_dim), generator=torch.Generator().manual_seed(EVAL_SEED)).numpy()}
            if conditional:
                feeds["class"] = one_hot(torch.arange(n) % digits_gen.CLASSES).numpy()
            return digits_metrics(torch.from_numpy(predictor(feeds)["image"]), c.image_size)

        def calibration() -> Any:
            """int8 calibration: latents from the prior (and every class), the inputs the generator serves."""
            cal = torch.Generator().manual_seed(EVAL_SEED + 2)
            for _ in range(8):
                feeds = {"z": torch.randn((16, c.latent_dim), generator=cal).numpy()}
                if conditional:
                    feeds["class"] = one_hot(torch.arange(16) % digits_gen.CLASSES).numpy()
                yield feeds

        return ExportSpec(
            module=module,
            example_inputs=examples,
            inputs=inputs,
            outputs=[TensorSpec("image", [1, c.image_size, c.image_size], "FP32", "image", "NCHW", [0.0, 1.0])],
            task="generation",
            architecture=f"{self.model_name}: {self.architecture()}",
            dynamic_spatial=False,
            tile_safe=False,
            parity_inputs=parity,
            evaluate=evaluate,
            quality_key="classes_covered",
            calibration=calibration,
            card_extra=self._card_extra(),
        )

    def architecture(self) -> str:
        """The model card's architecture after the model name (the decoder's sizes from the built network)."""
        c = self.config
        return f"DCGAN-style conv decoder, latent {c.latent_dim}, {describe_network(self.sampler())} digits"

    def _card_extra(self) -> dict[str, Any]:
        facts = self.card_facts("grey image in [0, 1]; latent z ~ N(0, I)", "", eval=self.run_metrics().get("eval"))
        facts["training_data"] = digits_gen.DESCRIPTION.format(size=self.config.image_size)
        return facts
