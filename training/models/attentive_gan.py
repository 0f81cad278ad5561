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
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from ganserve.core.contract import TensorSpec
from ganserve.core.errors import GanserveError
from ganserve.training.application import Application, DemoExample, TrainContext
from ganserve.training.config import CommonConfig
from ganserve.training.data.images import BUILTIN_HELD_OUT, BUILTIN_TRAIN, load_builtin, step_generator
from ganserve.training.data.raindrops import HELD_OUT_COUNT, HELD_OUT_CROP, RainSource, held_out_pairs, stack_pairs
from ganserve.core.export_spec import ExportSpec
from ganserve.training.models.sr_eval import picture_grid
from ganserve.training.models.vgg import VGG19_RELU_INDEX, load_vgg19_features
from ganserve.training.objectives import get_objective
from ganserve.training.objectives.content import ContentLoss
from ganserve.training.registry import register_model

# Maps a NCHW float32 rainy batch in [0, 1] to (derained batch, final attention map or None).
Predict = Callable[[np.ndarray], tuple[np.ndarray, "np.ndarray | None"]]
HELD_OUT_DESCRIPTION = (f"held out (never trained on): {HELD_OUT_COUNT} crops of {HELD_OUT_CROP}x{HELD_OUT_CROP} from "
                        + ", ".join(BUILTIN_HELD_OUT) + " with drops rendered from fixed seeds")
SPATIAL_MULTIPLE = 4  # two stride-2 stages in the autoencoder
DILATIONS = (2, 4, 8, 16)  # the paper's dilated convolutions at 1/4 resolution


# -- losses --------------------------------------------------------------------------------------------------
def attention_loss(attentions: list[torch.Tensor], mask: torch.Tensor, theta: float = 0.8) -> torch.Tensor:
    """sum_t theta^(N - t) * MSE(A_t, M): later time steps weigh more (the paper's L_ATT, t = 1..N)."""
    n = len(attentions)
    return sum(theta ** (n - t) * F.mse_loss(a, mask) for t, a in enumerate(attentions, start=1))  # type: ignore[return-value]


def multiscale_loss(outputs: list[torch.Tensor], clean: torch.Tensor,
                    weights: tuple[float, ...] = (0.6, 0.8, 1.0)) -> torch.Tensor:
    """sum_i lambda_i * MSE(S_i, T_i), T_i the clean image area-resized to the size of output S_i (the paper's L_M)."""
    if len(outputs) != len(weights):
        raise ValueError(f"{len(outputs)} outputs for {len(weights)} scale weights")
    total = clean.new_zeros(())
    for out, w in zip(outputs, weights):
        target = clean if out.shape[-2:] == clean.shape[-2:] else F.interpolate(clean, size=out.shape[-2:], mode="area")
        total = total + w * F.mse_loss(out, target)
    return total


# -- held-out evaluation --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _held_out() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rainy, clean, mask = stack_pairs(held_out_pairs())
    return rainy.numpy(), clean.numpy(), mask.numpy()


def _psnr_ssim(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """PSNR (dB, RGB, data range 1) and SSIM (RGB mean; Gaussian 11x11, sigma 1.5) of two CHW images."""
    p, t = np.clip(pred, 0.0, 1.0).transpose(1, 2, 0).astype(np.float64), truth.transpose(1, 2, 0).astype(np.float64)
    psnr = peak_signal_noise_ratio(t, p, data_range=1.0)
    ssim = structural_similarity(t, p, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return float(psnr), float(ssim)


def evaluate_derain(predict: Predict) -> dict[str, float]:
    """Mean PSNR/SSIM of ``predict``'s output and of the rainy input against the clean held-out images;
    with an attention map, its IoU (map > 0.5) with the drop mask."""
    start = time.perf_counter()
    rainy, clean, mask = _held_out()
    out, att = predict(rainy)
    if out.shape != clean.shape:
        raise ValueError(f"predictor returned {out.shape} for {rainy.shape}")
    rows = [(*_psnr_ssim(out[i], clean[i]), *_psnr_ssim(rainy[i], clean[i])) for i in range(len(clean))]
    psnr, ssim, rain_psnr, rain_ssim = (float(np.mean(col)) for col in zip(*rows))
    result = {"psnr": psnr, "ssim": ssim, "rainy_psnr": rain_psnr, "rainy_ssim": rain_ssim,
              "psnr_gain": psnr - rain_psnr, "ssim_gain": ssim - rain_ssim}
    if att is not None:
        hit, truth = att > 0.5, mask > 0.5
        result["attention_iou"] = float((hit & truth).sum() / max((hit | truth).sum(), 1))
    result["eval_images"] = float(len(rows))
    result["eval_seconds"] = time.perf_counter() - start
    return result


def derain_grid(predict: Predict, count: int = 4) -> np.ndarray:
    """Held-out rows of rainy | attention map (grey; blank without one) | output | clean, as HxWx3 uint8."""
    rainy, clean, _ = (a[:count] for a in _held_out())
    out, att = predict(rainy)
    att_rgb = np.repeat(att, 3, axis=1) if att is not None else np.ones_like(rainy)
    return picture_grid([rainy, att_rgb, np.clip(out, 0.0, 1.0), clean])


# -- networks -----------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """conv3x3 - ReLU - conv3x3, plus the identity, then ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ConvLSTMCell(nn.Module):
    """A convolutional LSTM cell (Shi et al. 2015): gates from one 3x3 conv over [input, hidden]."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.gates = nn.Conv2d(in_channels + channels, 4 * channels, 3, padding=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, g, o = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class AttentiveRecurrentNet(nn.Module):
    """N time steps of [image, previous attention] -> conv, residual blocks, ConvLSTM -> attention map A_t.

    States start at zero and the first attention map at 0.5 everywhere (as in the paper). The states are built
    from the features' own shape, so the unrolled graph exports with dynamic height and width.
    """

    def __init__(self, channels: int = 16, blocks: int = 2, steps: int = 4) -> None:
        super().__init__()
        self.steps, self.channels = steps, channels
        self.head = nn.Sequential(nn.Conv2d(4, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])
        self.lstm = ConvLSTMCell(channels, channels)
        self.to_map = nn.Conv2d(channels, 1, 3, padding=1)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        att = torch.full_like(image[:, :1], 0.5)
        h = c = None
        maps = []
        for _ in range(self.steps):
            x = self.blocks(self.head(torch.cat([image, att], dim=1)))
            if h is None or c is None:
                h = c = torch.zeros_like(x)
            h, c = self.lstm(x, h, c)
            att = torch.sigmoid(self.to_map(h))
            maps.append(att)
        return maps


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, padding=dilation * (k - 1) // 2, dilation=dilation), nn.ReLU())


class ContextualAutoencoder(nn.Module):
    """The paper's contextual autoencoder at reduced width: encoder to 1/4 size, dilated convs, decoder with skips.

    Input: image and attention map (4 channels). Outputs at 1/4, 1/2 and full size. With ``residual`` each
    output is a correction added to the (resized) input image, so training starts at "return the rainy image"
    instead of having to learn the identity (not in the paper; see AttentiveGANConfig).
    """

    def __init__(self, width: int = 24, residual: bool = True) -> None:
        super().__init__()
        w1, w2, w4 = width, 2 * width, 4 * width
        self.residual = residual
        self.enc1 = _conv(4, w1, 5)
        self.enc2 = nn.Sequential(_conv(w1, w2, stride=2), _conv(w2, w2))
        self.enc4 = nn.Sequential(_conv(w2, w4, stride=2), _conv(w4, w4), _conv(w4, w4))
        self.context = nn.Sequential(*[_conv(w4, w4, dilation=d) for d in DILATIONS], _conv(w4, w4), _conv(w4, w4))
        self.out4 = nn.Conv2d(w4, 3, 3, padding=1)
        self.up2 = nn.Sequential(nn.ConvTranspose2d(w4, w2, 4, 2, 1), nn.ReLU())
        self.dec2 = _conv(w2, w2)
        self.out2 = nn.Conv2d(w2, 3, 3, padding=1)
        self.up1 = nn.Sequential(nn.ConvTranspose2d(w2, w1, 4, 2, 1), nn.ReLU())
        self.dec1 = _conv(w1, w1)
        self.out1 = nn.Conv2d(w1, 3, 3, padding=1)
        if residual:  # start near the identity: small corrections
            for head in (self.out4, self.out2, self.out1):
                with torch.no_grad():
                    head.weight.mul_(0.1)
                    head.bias.zero_()

    def forward(self, image: torch.Tensor, attention: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.enc1(torch.cat([image, attention], dim=1))
        f2 = self.enc2(f1)
        f4 = self.context(self.enc4(f2))
        d2 = self.dec2(self.up2(f4) + f2)  # skip connection at 1/2
        d1 = self.dec1(self.up1(d2) + f1)  # skip connection at full size
        outs = [self.out4(f4), self.out2(d2), self.out1(d1)]
        if self.residual:
            outs = [o + (image if o.shape[-1] == image.shape[-1] else F.avg_pool2d(image, image.shape[-1] // o.shape[-1]))
                    for o in outs]
        return outs


def receptive_radius(config: "AttentiveGANConfig") -> int:
    """Pixels of context on each side that one output pixel can see (upper bound, from the layer arithmetic).

    Autoencoder: 5x5 conv (2), 3x3 convs at strides 1/2/4 and the dilated ones at 1/4 scale, transposed convs
    (1.5 input pixels each); attentive net: (2 * blocks + 3) 3x3 convs per time step, the map fed back.
    """
    ae = 2 + 1 + 2 + 2 + 4 * 2 + sum(4 * d for d in DILATIONS) + 4 * 2 + 6 + 2 + 3 + 1 + 1
    arn = 0 if config.baseline_l1 else config.time_steps * (2 * config.arn_blocks + 3)
    return ae + arn


class AttentiveGenerator(nn.Module):
    """Attentive-recurrent network + contextual autoencoder; ``forward`` returns (attention maps, outputs)."""

    def __init__(self, config: "AttentiveGANConfig") -> None:
        super().__init__()
        self.arn = None if config.baseline_l1 else AttentiveRecurrentNet(config.arn_channels, config.arn_blocks,
                                                                          config.time_steps)
        self.autoencoder = ContextualAutoencoder(config.ae_width, config.residual)

    def forward(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        maps = self.arn(image) if self.arn is not None else [torch.full_like(image[:, :1], 0.5)]
        return maps, self.autoencoder(image, maps[-1])


class AttentiveDiscriminator(nn.Module):
    """Seven 3x3 convs and two dense layers; after the fourth conv (1/4 size) a small head predicts an attention
    mask that multiplies the features the last three convs see. Returns (real/fake logits, mask)."""

    def __init__(self, channels: int = 16, hidden: int = 128) -> None:
        super().__init__()
        c = channels

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.LeakyReLU(0.2))

        self.early = nn.Sequential(block(3, c, 1), block(c, 2 * c, 2), block(2 * c, 2 * c, 1), block(2 * c, 4 * c, 2))
        self.mask_head = nn.Sequential(block(4 * c, 2 * c, 1), nn.Conv2d(2 * c, 1, 3, padding=1))
        self.late = nn.Sequential(block(4 * c, 4 * c, 2), block(4 * c, 8 * c, 2), block(8 * c, 8 * c, 1),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(8 * c, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.early(x)
        mask = torch.sigmoid(self.mask_head(features))
        return self.classifier(self.late(features * mask)).view(-1), mask


class DerainInference(nn.Module):
    """What gets exported: rainy RGB [0,1] NCHW -> derained RGB [0,1] (clamped) and, with attention, the map."""

    def __init__(self, generator: AttentiveGenerator) -> None:
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
    time_steps: int = 4  # N
    theta: float = 0.8
    arn_channels: int = 12
    arn_blocks: int = 2
    ae_width: int = 24
    residual: bool = True
    scale_weights: str = "0.6,0.8,1.0"  # lambda for the 1/4, 1/2 and full-size outputs
    perceptual_weight: float = 1.0
    vgg_weights: str = ""  # torchvision-format VGG19 state dict; empty = image-gradient fallback
    vgg_layer: str = "2_2"
    adversarial: str = "minimax"  # the paper's log(1 - D(G(I))); any name in training.objectives
    adv_weight: float = 0.01
    gamma: float = 0.05  # weight of the discriminator's mask loss
    d_channels: int = 16
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
        if config.patch < 16 or config.patch % SPATIAL_MULTIPLE:
            raise GanserveError(f"patch must be a multiple of {SPATIAL_MULTIPLE} and >= 16, got {config.patch}")
        if config.time_steps < 1 or config.arn_blocks < 0 or min(config.arn_channels, config.ae_width) < 1:
            raise GanserveError("time_steps, arn_channels and ae_width must be >= 1 and arn_blocks >= 0")
        if config.vgg_layer not in VGG19_RELU_INDEX:
            raise GanserveError(f"vgg_layer must be one of {', '.join(VGG19_RELU_INDEX)}, got {config.vgg_layer!r}")
        self.scale_weights = _parse_weights(config.scale_weights)
        self.generator = AttentiveGenerator(config)
        self.discriminator = None if config.baseline_l1 else AttentiveDiscriminator(config.d_channels)
        self.objective = None if config.baseline_l1 else get_objective(config.adversarial)
        self.content: ContentLoss | None = None
        self.source: RainSource | None = None

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
        to8 = lambda a: (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # noqa: E731
        return [DemoExample(name=f"held_out_{i}", image=to8(p.rainy), truth=to8(p.clean)) for i, p in enumerate(pairs)]

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
            gen = torch.Generator().manual_seed(1234)
            for _ in range(8):
                yield {"rainy": source.batch(1, gen)[0].numpy()}

        kind = "autoencoder alone (L1 baseline)" if c.baseline_l1 else (
            f"attentive-recurrent net {c.time_steps} steps x {c.arn_blocks} blocks x {c.arn_channels} ch + ConvLSTM")
        return ExportSpec(
            module=module,
            example_inputs=(small,),
            inputs=[TensorSpec("rainy", [3, -1, -1], "FP32", "image", "NCHW", [0.0, 1.0])],
            outputs=outputs,
            task="derain",
            architecture=f"{self.model_name}: {kind}, contextual autoencoder width {c.ae_width}",
            scale=1,
            spatial_multiple=SPATIAL_MULTIPLE,
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
            receptive_radius_px=receptive_radius(self.config),
            tiling="whole image: the receptive field (radius in receptive_radius_px) exceeds useful tile overlaps")


def _parse_weights(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError as exc:
        raise GanserveError(f"scale_weights must be three numbers like 0.6,0.8,1.0, got {text!r}") from exc
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values):
        raise GanserveError(f"scale_weights must be three non-negative numbers like 0.6,0.8,1.0, got {text!r}")
    return values  # type: ignore[return-value]

