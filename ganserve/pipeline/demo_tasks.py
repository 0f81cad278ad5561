"""What the main job asks a served model, chosen by its card's roles: send each held-out example through the image
API, measure the answer against the truth and the obvious baseline, and draw a labelled side-by-side."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from ganserve.core.contract import ModelCard
from ganserve.core.errors import GanserveError
from ganserve.core.image_metrics import from_uint8, psnr_y, ssim_y, to_uint8
from ganserve.core.pictures import enlarge_to, png_bytes

PANEL = 192  # small pictures (digits, faces) are shown at least this tall, nearest-neighbour


@dataclass
class Outcome:
    """One example's figures (for the summary table) and its side-by-side panels."""

    row: dict[str, Any]
    panels: list[tuple[Image.Image, str]] = field(default_factory=list)


def _quality(pred: np.ndarray, truth: np.ndarray, border: int, prefix: str = "") -> dict[str, float]:
    p, t = from_uint8(pred), from_uint8(truth)
    return {f"{prefix}psnr_y": psnr_y(p, t, border), f"{prefix}ssim_y": ssim_y(p, t, border)}


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    reply = call()
    return reply, (time.perf_counter() - t0) * 1e3


def _transform(client, card: ModelCard, ex):
    """Send an example through Transform; its `condition` fills the model's (first) condition input."""
    conditions = card.conditions()
    named = {conditions[0].name: ex.condition} if ex.condition and conditions else None
    return client.transform(card.name, png_bytes(ex.image), conditions=named)


def upscaled(client, card: ModelCard, ex) -> Outcome:
    """A model whose output is `scale` times its input; baseline: bicubic upscaling of the same 8-bit image."""
    import torch

    from ganserve.training.data.images import upscale_bicubic

    reply, ms = _timed(lambda: _transform(client, card, ex))
    out = np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB"))
    lr = torch.from_numpy(from_uint8(ex.image).astype(np.float32).transpose(2, 0, 1)[None])
    bic = upscale_bicubic(lr, card.scale)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    bic8 = to_uint8(bic)
    row = {"example": ex.name, "request_ms": ms, "input_size": list(ex.image.shape[:2]), "output_size": list(out.shape[:2]),
           **_quality(out, ex.truth, card.scale), **_quality(bic8, ex.truth, card.scale, "baseline_")}
    lr_img = Image.fromarray(ex.image)
    return Outcome(row, [
        (lr_img.resize((out.shape[1], out.shape[0]), Image.NEAREST), "input (LR, nearest)"),
        (Image.fromarray(bic8), f"bicubic {row['baseline_psnr_y']:.2f} dB"),
        (Image.fromarray(out), f"{card.name} {row['psnr_y']:.2f} dB"),
        (Image.fromarray(ex.truth), "ground truth"),
    ])


def same_size(client, card: ModelCard, ex) -> Outcome:
    """An image-to-image model at scale 1; baseline: the input itself (identity), when its size matches the truth."""
    reply, ms = _timed(lambda: _transform(client, card, ex))
    out_img = Image.open(io.BytesIO(reply.image)).convert("RGB")
    out = np.asarray(out_img)
    row: dict[str, Any] = {"example": ex.name, "request_ms": ms, **({"condition": ex.condition} if ex.condition else {})}
    panels = [(enlarge_to(Image.fromarray(ex.image), PANEL), "input")]
    label = card.name
    if ex.truth is not None:
        row.update(_quality(out, ex.truth, card.scale))
        label += f" {row['psnr_y']:.2f} dB"
        if ex.image.shape[:2] == ex.truth.shape[:2]:
            row.update(_quality(ex.image, ex.truth, card.scale, "baseline_"))
            panels[0] = (panels[0][0], f"input {row['baseline_psnr_y']:.2f} dB")
    panels.append((enlarge_to(out_img, PANEL), label + (f" ({ex.condition})" if ex.condition else "")))
    if ex.truth is not None:
        panels.append((enlarge_to(Image.fromarray(ex.truth), PANEL), "ground truth"))
    return Outcome(row, panels)


def classification(client, card: ModelCard, ex) -> Outcome:
    """Classify; the row says whether the top class is the true one."""
    reply, ms = _timed(lambda: client.classify(card.name, png_bytes(ex.image), top_k=3))
    top = reply.scores[0]
    row = {"example": ex.name, "request_ms": ms, "label": ex.label, "predicted": top.label,
           "probability": top.probability, "correct": float(top.label == ex.label)}
    return Outcome(row, [(enlarge_to(Image.fromarray(ex.image), PANEL), f"true {ex.label}: {top.label} ({top.probability:.2f})")])


def generation(client, card: ModelCard, ex) -> Outcome:
    """Generate from a seed (and a class for conditional models); there is no truth to compare with."""
    reply, ms = _timed(lambda: client.generate(card.name, seed=ex.seed, condition=ex.condition))
    img = Image.open(io.BytesIO(reply.image))
    row = {"example": ex.name, "request_ms": ms, "seed": ex.seed, "condition": ex.condition}
    return Outcome(row, [(enlarge_to(img, PANEL), f"seed {ex.seed}" + (f", class {ex.condition}" if ex.condition else ""))])


def ask(client, card: ModelCard, ex) -> Outcome:
    """One held-out example through the RPC the card's roles call for (serving.images.rpc_for): Transform (with
    the bicubic baseline when the card's scale > 1), Classify or Generate."""
    from ganserve.serving.images import rpc_for

    rpc = rpc_for(card)
    if rpc == "Transform":
        return (upscaled if card.scale > 1 and ex.truth is not None else same_size)(client, card, ex)
    if rpc == "Classify":
        return classification(client, card, ex)
    if rpc == "Generate":
        return generation(client, card, ex)
    raise GanserveError(f"model {card.name!r}: no image API request fits its inputs and outputs "
                        f"({', '.join(t.role for t in card.inputs)} -> {', '.join(t.role for t in card.outputs)})")


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over a model's examples: quality vs baseline for images, accuracy for classifiers, request time."""
    out: dict[str, float] = {"examples": float(len(rows))}
    for key in ("psnr_y", "baseline_psnr_y", "ssim_y", "baseline_ssim_y", "correct", "request_ms"):
        values = [r[key] for r in rows if key in r]
        if values:
            out["accuracy" if key == "correct" else key] = float(np.mean(values))
    return out
