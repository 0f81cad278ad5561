"""The quality rule a faster precision or provider must keep on the reference set (numpy only, torch-free).

Export gates its variants with it and the server checks its load-time candidates with it, so a variant the export
writes is one the server would accept on the same provider. Each output is judged by its role (docs/int8.md):

- **image** (the picture a client receives): loses at most PSNR_DROP_DB against the reference set's ground truth
  (or stays within the max-abs tolerance of the fp32 outputs when the set has no ground truth), and, against the
  fp32 outputs, has no local artifact: the largest error at most ARTIFACT_MAX, its 99.9th percentile at most
  ARTIFACT_P999 (both per unit of value range), and every picture's SSIM at least SSIM_MIN. A mean figure alone
  cannot see a small patch gone wrong; these can.
- **mask** (an auxiliary map such as derain's attention, shown beside the picture or thresholded by a client): at
  most MASK_FLIPPED of its values change side of the range's midpoint, the mean error stays within MASK_MEAN, and
  the same ARTIFACT_MAX bounds any single value.
- **probabilities / logits**: no top-1 answer changes.
- anything else: within the precision's max-abs tolerance of fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.core.image_metrics import psnr, ssim_rgb

PSNR_DROP_DB = 0.1
# Artifact bounds of an image output against fp32, per unit of value range. An injected patch off by 0.3 of the
# range must fail (tests/core/test_quality.py); torch's bf16 autocast stays under 0.02 / 0.007 / SSIM 0.9999 on
# every shipped image model's reference set, 10x inside them (docs/int8.md has the measured table).
ARTIFACT_MAX = 0.2
ARTIFACT_P999 = 0.06
SSIM_MIN = 0.98
# A mask output: share of values that change side of the midpoint, and the mean abs error per unit of range.
MASK_FLIPPED = 0.01
MASK_MEAN = 0.02
# Max abs error vs the fp32 reference, per unit of value range, where no PSNR or top-1 rule applies.
REFERENCE_TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2, "fp16": 1e-2, "int8": 6e-2}
CLASS_ROLES = ("probabilities", "logits")
# The rule in one line, for model cards and messages.
RULE_TEXT = (f"image outputs lose at most {PSNR_DROP_DB} dB PSNR vs fp32 against the ground truth (or stay within the "
             f"max-abs tolerance without one) and keep their error vs fp32 at most {ARTIFACT_MAX} (max) and "
             f"{ARTIFACT_P999} (99.9th percentile) of the value range with SSIM at least {SSIM_MIN}; masks change side "
             f"of the midpoint on at most {MASK_FLIPPED:.0%} of values, mean error at most {MASK_MEAN}; "
             f"{'/'.join(CLASS_ROLES)} change no top-1 answer; other outputs stay within a max abs error of "
             f"{REFERENCE_TOLERANCE['int8']:g} (int8) / {REFERENCE_TOLERANCE['fp16']:g} (fp16) / "
             f"{REFERENCE_TOLERANCE['bf16']:g} (bf16) x the value range")


@dataclass
class ReferenceCase:
    """One case of the reference set: inputs, fp32 outputs and (where the export knew it) the ground truth."""

    inputs: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    truth: dict[str, np.ndarray] = field(default_factory=dict)


def reference_cases(items: Iterable[tuple[str, np.ndarray]]) -> list[ReferenceCase]:
    """reference.npz's arrays as cases: keys "in:/out:/truth:<tensor>" (case 0) and "case<k>/in:..." (further
    cases); unknown kinds are ignored and a case without inputs or outputs is dropped. The export gates its variants
    and the server checks its candidates on exactly these cases."""
    grouped: dict[int, ReferenceCase] = {}
    for key, value in items:
        case, _, entry = key.rpartition("/")
        kind, _, tensor = entry.partition(":")
        target = grouped.setdefault(int(case.removeprefix("case")) if case else 0, ReferenceCase({}, {}))
        slot = {"in": target.inputs, "out": target.expected, "truth": target.truth}.get(kind)
        if slot is not None:
            slot[tensor] = value
    return [grouped[k] for k in sorted(grouped) if grouped[k].inputs and grouped[k].expected]


def _flat(arrays: list[np.ndarray]) -> np.ndarray:
    """Every case's pixels in one vector, so the PSNR is over the whole set (cases differ in size)."""
    return np.concatenate([a.ravel() for a in arrays])


def _errors(got: list[np.ndarray], want: list[np.ndarray]) -> np.ndarray:
    """|got - want| over every case, in one float64 vector."""
    return np.concatenate([np.abs(g.astype(np.float64) - w.astype(np.float64)).ravel() for g, w in zip(got, want)])


def _within_tolerance(name: str, got: list[np.ndarray], want: list[np.ndarray], span: float,
                      precision: str) -> tuple[bool, str]:
    err = float(np.max(_errors(got, want), initial=0.0))
    limit = REFERENCE_TOLERANCE.get(precision, 1e-3) * max(span, 1e-6)
    return err <= limit, f"{name}: max abs error {err:.2e} (limit {limit:.1e})"


def _pictures(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Every NCHW picture of the cases as CHW, for SSIM (its 11 x 11 Gaussian window needs that many pixels)."""
    return [p for a in arrays if a.ndim == 4 and min(a.shape[2:]) >= 11 for p in a]


def _artifacts(name: str, got: list[np.ndarray], want: list[np.ndarray], span: float) -> tuple[bool, str]:
    """The local-artifact bounds of an image output against fp32: max and 99.9th percentile of |error|, SSIM."""
    err = _errors(got, want) / max(span, 1e-12)
    worst, p999 = (float(err.max()), float(np.quantile(err, 0.999))) if err.size else (0.0, 0.0)
    pairs = list(zip(_pictures(got), _pictures(want)))
    ssim = min((ssim_rgb(g, w, data_range=span, channel_axis=0) for g, w in pairs), default=1.0)
    ok = worst <= ARTIFACT_MAX and p999 <= ARTIFACT_P999 and ssim >= SSIM_MIN
    return ok, (f"{name}: error vs fp32 max {worst:.3f} (limit {ARTIFACT_MAX}), p99.9 {p999:.4f} "
                f"(limit {ARTIFACT_P999}), SSIM min {ssim:.4f} (limit {SSIM_MIN})")


def _mask(name: str, got: list[np.ndarray], want: list[np.ndarray], low: float, span: float) -> tuple[bool, str]:
    """An auxiliary map: values changing side of the midpoint, mean and max error against fp32."""
    mid = low + span / 2
    sides = np.concatenate([((g >= mid) != (w >= mid)).ravel() for g, w in zip(got, want)])
    flipped = float(sides.mean()) if sides.size else 0.0
    err = _errors(got, want) / max(span, 1e-12)
    mean, worst = (float(err.mean()), float(err.max())) if err.size else (0.0, 0.0)
    ok = flipped <= MASK_FLIPPED and mean <= MASK_MEAN and worst <= ARTIFACT_MAX
    return ok, (f"{name}: {flipped:.2%} flipped at the midpoint (limit {MASK_FLIPPED:.0%}), mean error {mean:.4f} "
                f"(limit {MASK_MEAN}), max {worst:.3f} (limit {ARTIFACT_MAX})")


def check_outputs(outputs_spec: list[TensorSpec], cases: list[ReferenceCase], outputs: list[dict[str, np.ndarray]],
                  precision: str) -> tuple[bool, str]:
    """The rule over declared output tensors: whether `outputs` (one dict per case) pass, and the deciding figures."""
    specs = {t.name: t for t in outputs_spec}
    verdicts: list[tuple[bool, str]] = []
    for name in cases[0].expected:
        spec = specs.get(name)
        got = [o.get(name) for o in outputs]
        want = [c.expected[name] for c in cases]
        if any(g is None or g.shape != w.shape or not np.all(np.isfinite(g)) for g, w in zip(got, want)):
            return False, f"{name}: wrong shape, NaN or inf"
        span = float(spec.value_range[1] - spec.value_range[0]) if spec and spec.value_range else 1.0
        truth = [c.truth.get(name) for c in cases]
        if spec is not None and spec.role in CLASS_ROLES:
            changed = sum(int(np.sum(np.argmax(g, 1) != np.argmax(w, 1))) for g, w in zip(got, want))
            total = sum(w.shape[0] for w in want)
            verdicts.append((changed == 0, f"{name}: top-1 changed on {changed}/{total}"))
        elif spec is not None and spec.role == "image":
            verdicts.append(_artifacts(name, got, want, span))
            if all(t is not None for t in truth):
                ref_db = psnr(_flat(want), _flat(truth), span)
                got_db = psnr(_flat(got), _flat(truth), span)
                drop = ref_db - got_db
                verdicts.append((drop <= PSNR_DROP_DB, f"{name}: PSNR {got_db:.3f} dB vs fp32 {ref_db:.3f} dB "
                                                       f"(drop {drop:+.3f}, limit {PSNR_DROP_DB})"))
            else:
                verdicts.append(_within_tolerance(name, got, want, span, precision))
        elif spec is not None and spec.role == "mask":
            verdicts.append(_mask(name, got, want, spec.value_range[0] if spec.value_range else 0.0, span))
        else:
            verdicts.append(_within_tolerance(name, got, want, span, precision))
    return all(ok for ok, _ in verdicts), "; ".join(text for _, text in verdicts)


def check_quality(card: ModelCard | None, cases: list[ReferenceCase], outputs: list[dict[str, np.ndarray]],
                  precision: str) -> tuple[bool, str]:
    """Whether one candidate's outputs on the reference set keep the card's quality, and the figures that decide."""
    return check_outputs(card.outputs if card else [], cases, outputs, precision)
