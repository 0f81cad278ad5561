"""Two tiny registered applications with full ExportSpecs, so export tests need no trained model.

``test-tiny-upsampler``: conv + batch norm + PReLU + dropout + conv + pixel shuffle, x2, fully convolutional.
``test-tiny-classifier``: 8x8 grey digits -> 10 class probabilities, fixed spatial size.
``test-broken-size-branch``: a module whose Python branch on the input width is frozen by tracing, so its ONNX
graph is wrong at any other size (the classic "export fixed at one size" bug) and must fail parity.
``test-broken-int8-calibration``: the tiny upsampler with ground truth in its reference set, calibrated on images
50x darker than real ones, so its int8 activations clip and the variant must fail the PSNR-drop rule.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ganserve.core.contract import TensorSpec
from ganserve.training.application import Application
from ganserve.training.checkpoint import save_checkpoint
from ganserve.core.export_spec import ExportSpec, Predictor
from ganserve.training.registry import register_model

UPSAMPLER = "test-tiny-upsampler"
CLASSIFIER = "test-tiny-classifier"
BROKEN = "test-broken-size-branch"  # registered, but excluded from round trips: its export must fail
MISCALIBRATED = "test-broken-int8-calibration"  # exports fp32 fine; its int8 variant must be refused
CUBIC = "test-cubic-resize-skip"  # its int8 graph holds a cubic Resize, which one provider cannot run


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two arrays in [0, 1]."""
    mse = float(np.mean((np.clip(a, 0, 1).astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(1.0 / max(mse, 1e-12))


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A scikit-image sample photo as 1x3xHxW float32 in [0, 1]."""
    import skimage.data

    img = getattr(skimage.data, name)()[:, :, :3].astype(np.float32) / 255.0
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None])


def _down2(hr: np.ndarray) -> np.ndarray:
    """2x2 box downscale (the degradation the tiny upsampler inverts)."""
    n, c, h, w = hr.shape
    return hr.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5)).astype(np.float32)


@dataclass
class UpsamplerConfig:
    channels: int = 8


@register_model(UPSAMPLER, UpsamplerConfig)
class TinyUpsampler(Application):
    """A 2-conv x2 upsampler initialised near nearest-neighbour, so its quality is measurable."""

    def __init__(self, config: UpsamplerConfig) -> None:
        super().__init__(config)
        c = config.channels
        self.net = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.PReLU(c), nn.Dropout(0.5),
            nn.Conv2d(c, 12, 3, padding=1), nn.PixelShuffle(2),
        )
        torch.manual_seed(0)
        for m in self.net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        with torch.no_grad():  # first conv passes RGB through, last copies it to all four sub-pixels
            for i in range(3):
                self.net[0].weight[i, i, 1, 1] = 1.0
                for k in range(4):
                    self.net[4].weight[i * 4 + k, i, 1, 1] = 1.0
        self.net[1].running_mean.fill_(0.01)
        self.net[1].running_var.fill_(1.1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.net(lr)

    def _evaluate(self, predict: Predictor) -> dict[str, float]:
        hr = _photo("coffee")[:, :, :64, :96]
        lr = _down2(hr)
        sr = predict({"lr": lr})["sr"]
        bicubic = F.interpolate(torch.from_numpy(lr), scale_factor=2, mode="bicubic", align_corners=False).numpy()
        return {"psnr": psnr(sr, hr), "bicubic_psnr": psnr(bicubic, hr)}

    def _calibration(self) -> Iterable[dict[str, np.ndarray]]:
        photo = _photo("astronaut")
        for i in range(4):
            yield {"lr": _down2(photo[:, :, 64 * i : 64 * i + 64, 100:164])}

    def export_spec(self) -> ExportSpec:
        chelsea = _photo("chelsea")
        return ExportSpec(
            module=self.net.eval(),
            example_inputs=(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)),),
            inputs=[TensorSpec("lr", [3, -1, -1], value_range=[0.0, 1.0])],
            outputs=[TensorSpec("sr", [3, -1, -1], value_range=[0.0, 1.0])],
            task="super_resolution",
            architecture="tiny-upsampler-x2",
            scale=2,
            parity_inputs=[{"lr": _down2(chelsea[:, :, 100:148, 100:148])}, {"lr": _down2(chelsea[:, :, 0:80, 0:64])}],
            evaluate=self._evaluate,
            quality_key="psnr",
            calibration=self._calibration,
            card_extra={"data": "scikit-image photos (test helper)", "budget": "untrained"},
        )


@register_model(MISCALIBRATED, UpsamplerConfig)
class MiscalibratedUpsampler(TinyUpsampler):
    """The tiny upsampler with reference ground truth and int8 calibration on far too dark images."""

    def _calibration(self) -> Iterable[dict[str, np.ndarray]]:
        for batch in super()._calibration():
            yield {"lr": batch["lr"] * np.float32(0.02)}

    def export_spec(self) -> ExportSpec:
        chelsea = _photo("chelsea")
        hrs = [chelsea[:, :, 100:148, 100:148], chelsea[:, :, 0:80, 0:64]]
        return dataclasses.replace(super().export_spec(), parity_inputs=[{"lr": _down2(hr)} for hr in hrs],
                                   reference_targets=[{"sr": hr} for hr in hrs], architecture="miscalibrated-x2")


class _CubicSkip(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.net(lr) + F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=False))


@register_model(CUBIC, UpsamplerConfig)
class CubicSkipUpsampler(TinyUpsampler):
    """The tiny upsampler averaged with a bicubic skip traced as a cubic Resize: onnxruntime-openvino 1.24's CPU
    provider cannot run that Resize on the int8 (QDQ) graph's uint8 tensors, so only OpenVINO runs its int8."""

    def export_spec(self) -> ExportSpec:
        return dataclasses.replace(super().export_spec(), module=_CubicSkip(self.net).eval(), architecture="cubic-skip-x2")


@dataclass
class ClassifierConfig:
    hidden: int = 8


@register_model(CLASSIFIER, ClassifierConfig)
class TinyClassifier(Application):
    """A conv + linear digit classifier on 8x8 images; not fully convolutional."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__(config)
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, config.hidden, 3, padding=1), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(),
            nn.Linear(config.hidden * 64, 10), nn.Softmax(dim=1),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    @staticmethod
    def _digits() -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images / 16.0).astype(np.float32)[:, None], d.target

    def _evaluate(self, predict: Predictor) -> dict[str, float]:
        x, y = self._digits()
        probs = predict({"image": x[-200:]})["probabilities"]
        return {"accuracy": float(np.mean(probs.argmax(1) == y[-200:])), "chance_accuracy": 0.1}

    def export_spec(self) -> ExportSpec:
        x, _ = self._digits()
        return ExportSpec(
            module=self.net.eval(),
            example_inputs=(torch.from_numpy(x[:1]),),
            inputs=[TensorSpec("image", [1, 8, 8], value_range=[0.0, 1.0])],
            outputs=[TensorSpec("probabilities", [10], role="probabilities", layout="NC", labels=[str(i) for i in range(10)])],
            task="classification",
            architecture="tiny-classifier",
            dynamic_spatial=False,
            parity_inputs=[{"image": x[10:11]}],
            evaluate=self._evaluate,
            quality_key="accuracy",
            calibration=lambda: ({"image": x[i : i + 16]} for i in range(0, 64, 16)),
        )


class _SizeBranch(nn.Module):
    """Doubles 16-pixel-wide inputs and triples others: tracing at width 16 keeps only the first branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 if x.shape[-1] == 16 else x * 3.0


@dataclass
class BrokenConfig:
    pass


@register_model(BROKEN, BrokenConfig)
class BrokenSizeBranch(Application):
    """An application whose export runs but computes the wrong thing at untraced sizes."""

    def __init__(self, config: BrokenConfig) -> None:
        super().__init__(config)
        self.net = _SizeBranch()

    def export_spec(self) -> ExportSpec:
        return ExportSpec(
            module=self.net,
            example_inputs=(torch.rand(1, 3, 16, 16),),
            inputs=[TensorSpec("x", [3, -1, -1], value_range=[0.0, 1.0])],
            outputs=[TensorSpec("y", [3, -1, -1])],
            task="translation",
            architecture="size-branch",
        )


def save_tiny_checkpoint(path: Path, name: str, config: object | None = None) -> Path:
    """A real ganserve checkpoint of a tiny application (through training.checkpoint.save_checkpoint)."""
    from ganserve.training.registry import build

    app = build(name, config)
    return save_checkpoint(
        path,
        {"model": name, "config": dataclasses.asdict(app.config), "state": app.state_dict(), "step": 7,
         "metrics": {"loss": 0.5}},
    )
