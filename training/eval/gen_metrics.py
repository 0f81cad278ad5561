"""Sample-quality metrics for the generative models, computed the same way for every model.

Digits: a small CNN trained here on the digits' training split (fixed seed and steps) gives
features (its 64-unit penultimate layer) and class probabilities. The Frechet distance between the Gaussians fitted
to generated and held-out real features is the FID formula on this classifier's features -- it is NOT the Inception
FID and its values are not comparable with published FIDs. Also: classes covered (classes that receive at least a
quarter of their uniform share of the predictions), KL(generated class histogram || uniform), and sharpness: the
mean absolute finite-difference gradient of the samples divided by that of the held-out digits (1 = as sharp as
real digits; blurry samples score below 1).

The classifier's weights are read from ``digits_classifier_<size>.pt`` beside this module when it exists: training
it again gives a different network on a CPU whose float kernels differ (AVX2 vs AVX-512 paths: 95.9% vs 95.6% test
accuracy, Frechet 20.80 vs 20.99 for the same generator), so every machine must measure with the same weights.
The shipped file is what ``_train_classifier`` produces on the AVX2 code path (``ATEN_CPU_CAPABILITY=avx2``), the
path every recorded figure was measured with; ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python -m
training.eval.gen_metrics --write SIZE`` rewrites it (bit for bit on an AVX-512 CPU; both variables are needed).

Toy ring: a sample is high quality when it lies within 3 standard deviations of its nearest mode centre; a mode is
covered when at least 1% of the samples are high-quality samples of that mode.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from torch import nn

from ganserve.training.data import digits_gen
from ganserve.training.data.toy import RADIUS, STD, ring_centers

CLASSIFIER_STEPS = 250
CLASSIFIER_SEED = 1234
COVERED_SHARE = 0.25  # a class counts as covered at >= 25% of its uniform share of the samples
TOY_SIGMAS = 3.0
TOY_MODE_FRACTION = 0.01


class DigitsClassifier(nn.Module):
    """conv(1->16) - pool - conv(16->32) - pool - fc(64) - fc(10); features are the 64-unit layer."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, digits_gen.CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return features, self.head(features)


@dataclass
class TrainedClassifier:
    """The metric network and its held-out accuracy (stated next to every Frechet distance)."""

    model: DigitsClassifier
    test_accuracy: float

    @torch.no_grad()
    def features_probs(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(features N x 64, class probabilities N x 10) as float64 numpy."""
        feats, logits = [], []
        for chunk in images.float().split(512):
            f, lg = self.model(chunk.cpu())
            feats.append(f)
            logits.append(lg)
        return torch.cat(feats).double().numpy(), torch.cat(logits).softmax(1).double().numpy()


def classifier_file(size: int) -> Path:
    """Where the fixed metric classifier for ``size`` px digits lives (beside this module)."""
    return Path(__file__).with_name(f"digits_classifier_{size}.pt")


@functools.lru_cache(maxsize=None)
def digits_classifier(size: int) -> TrainedClassifier:
    """The project's metric classifier for ``size`` px digits: the committed weights where they exist, else
    trained once per process, deterministically (the same on one machine, not across CPU kinds).

    Run on one thread: the network is tiny, and a second thread only adds synchronisation (which becomes very
    costly when onnxruntime's worker threads are spinning in the same process, as during an export)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = classifier_file(size)
        if not path.is_file():
            return _train_classifier(size)
        model = DigitsClassifier(size)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        model.eval()
        return TrainedClassifier(model, _test_accuracy(model, size))
    finally:
        torch.set_num_threads(threads)


def _test_accuracy(model: DigitsClassifier, size: int) -> float:
    xt, yt = digits_gen.digits(size, "test")
    with torch.no_grad():
        return float((model(xt)[1].argmax(1) == yt).float().mean())


def _train_classifier(size: int) -> TrainedClassifier:
    x, y = digits_gen.digits(size, "train")
    gen = torch.Generator().manual_seed(CLASSIFIER_SEED)
    with torch.random.fork_rng():
        torch.manual_seed(CLASSIFIER_SEED)
        model = DigitsClassifier(size)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(CLASSIFIER_STEPS):
        idx = torch.randint(0, x.shape[0], (64,), generator=gen)
        shift = torch.randint(-1, 2, (2,), generator=gen)  # +-1 px translations: features that tolerate jitter
        batch = torch.roll(x[idx], shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
        loss = F.cross_entropy(model(batch)[1], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return TrainedClassifier(model, _test_accuracy(model, size))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between Gaussians fitted to two feature sets."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ridge = np.eye(a.shape[1]) * 1e-6  # dead ReLU units give singular covariances; the ridge keeps sqrtm stable
    s_a, s_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = np.real(linalg.sqrtm(s_a @ s_b))
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean))


def class_histogram_metrics(probs: np.ndarray) -> dict[str, float]:
    """Classes covered and KL(histogram of predicted classes || uniform) in nats (0 = perfectly balanced)."""
    k = probs.shape[1]
    counts = np.bincount(probs.argmax(1), minlength=k).astype(np.float64)
    hist = counts / counts.sum()
    nonzero = hist > 0
    kl = float((hist[nonzero] * np.log(hist[nonzero] * k)).sum())
    covered = int((hist >= COVERED_SHARE / k).sum())
    return {"classes_covered": covered, "class_kl": kl}


def gradient_energy(images: torch.Tensor) -> float:
    """Mean absolute horizontal + vertical finite difference of N x 1 x S x S images (an edge-sharpness figure)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return float(dx + dy)


def digits_metrics(samples: torch.Tensor, size: int) -> dict[str, float]:
    """Frechet distance to the held-out digits, classes covered, class KL; plus the real-data floor and the
    classifier's accuracy so a reader can judge the numbers. ``samples``: N x 1 x size x size in [0, 1]."""
    if samples.dim() != 4 or samples.shape[1:] != (1, size, size):
        raise ValueError(f"samples must be N x 1 x {size} x {size}, got {tuple(samples.shape)}")
    clf = digits_classifier(size)
    feats, probs = clf.features_probs(samples.clamp(0.0, 1.0))
    test_feats, _ = clf.features_probs(digits_gen.digits(size, "test")[0])
    train_x = digits_gen.digits(size, "train")[0]
    floor_feats, _ = clf.features_probs(train_x[: test_feats.shape[0]])
    return {
        "frechet": frechet_distance(feats, test_feats),
        "frechet_train_vs_test": frechet_distance(floor_feats, test_feats),
        **class_histogram_metrics(probs),
        "sharpness": gradient_energy(samples.clamp(0.0, 1.0)) / gradient_energy(digits_gen.digits(size, "test")[0]),
        "classifier_test_accuracy": clf.test_accuracy,
    }


def toy_metrics(samples: torch.Tensor, modes: int = 8, radius: float = RADIUS, std: float = STD) -> dict[str, float]:
    """High-quality fraction (within 3 std of the nearest mode) and modes covered (>= 1% of samples there)."""
    centers = ring_centers(modes, radius).double()
    d = torch.cdist(samples.double(), centers)
    nearest, which = d.min(dim=1)
    good = nearest <= TOY_SIGMAS * std
    counts = torch.bincount(which[good], minlength=modes)
    need = max(1, math.ceil(TOY_MODE_FRACTION * samples.shape[0]))
    return {"modes_covered": int((counts >= need).sum()), "high_quality_fraction": float(good.double().mean())}


def main(argv: list[str] | None = None) -> int:
    """Train the metric classifier for one size and write it where ``digits_classifier`` reads it (atomically)."""
    parser = argparse.ArgumentParser(prog="python -m ganserve.training.eval.gen_metrics", description=main.__doc__)
    parser.add_argument("--write", type=int, required=True, metavar="SIZE", help="digit size in pixels, e.g. 16")
    args = parser.parse_args(argv)
    if args.write < 4 or args.write % 4:
        print(f"error: --write: SIZE must be a multiple of 4 and >= 4, got {args.write}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    trained = _train_classifier(args.write)
    path = classifier_file(args.write)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(trained.model.state_dict(), tmp)
    os.replace(tmp, path)
    print(f"{path}: test accuracy {trained.test_accuracy:.6f} (cpu capability {torch.backends.cpu.get_cpu_capability()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
