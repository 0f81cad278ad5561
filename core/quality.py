"""The quality rule a faster precision or provider must keep on the reference set (numpy only, torch-free).

Export gates its variants with it and the server checks its load-time candidates with it, so a variant the export
writes is one the server would accept on the same provider. Image outputs lose at most PSNR_DROP_DB against the
reference set's ground truth (or stay within the max-abs tolerance of the fp32 outputs when the set has no ground
truth), classifiers change no top-1 answer, other tensors stay within the max-abs tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.core.image_metrics import psnr

PSNR_DROP_DB = 0.1
# Max abs error vs the fp32 reference, per unit of value range, where no PSNR or top-1 rule applies.
REFERENCE_TOLERANCE = {"fp32": 1e-3, "bf16": 2e-2, "fp16": 1e-2, "int8": 6e-2}
CLASS_ROLES = ("probabilities", "logits")


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
        elif spec is not None and spec.role == "image" and all(t is not None for t in truth):
            ref_db = psnr(_flat(want), _flat(truth), span)
            got_db = psnr(_flat(got), _flat(truth), span)
            drop = ref_db - got_db
            verdicts.append((drop <= PSNR_DROP_DB, f"{name}: PSNR {got_db:.3f} dB vs fp32 {ref_db:.3f} dB "
                                                   f"(drop {drop:+.3f}, limit {PSNR_DROP_DB})"))
        else:
            err = max(float(np.max(np.abs(g.astype(np.float64) - w))) for g, w in zip(got, want))
            limit = REFERENCE_TOLERANCE.get(precision, 1e-3) * max(span, 1e-6)
            verdicts.append((err <= limit, f"{name}: max abs error {err:.2e} (limit {limit:.1e})"))
    return all(ok for ok, _ in verdicts), "; ".join(text for _, text in verdicts)


def check_quality(card: ModelCard | None, cases: list[ReferenceCase], outputs: list[dict[str, np.ndarray]],
                  precision: str) -> tuple[bool, str]:
    """Whether one candidate's outputs on the reference set keep the card's quality, and the figures that decide."""
    return check_outputs(card.outputs if card else [], cases, outputs, precision)
