"""What the main job asks a served model, per task: send each held-out example through the image API, measure the
answer against the truth and the obvious baseline, and draw a labelled side-by-side."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from ganserve.core.contract import ModelCard

PANEL = 192  # small pictures (digits, faces) are shown at least this tall, nearest-neighbour


@dataclass
class Outcome:
    """One example's figures (for the summary table) and its side-by-side panels."""

    row: dict[str, Any]
    panels: list[tuple[Image.Image, str]] = field(default_factory=list)


def png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _rgb(image: np.ndarray) -> np.ndarray:
    """HxW or HxWx3 uint8 -> HxWx3 float64 in [0, 1] (what the Y-channel metrics take)."""
    x = np.asarray(image, dtype=np.float64) / 255.0
    return np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x[..., :3]


def _shown(img: Image.Image, height: int) -> Image.Image:
    """Nearest-neighbour enlargement of small pictures so a 16-pixel digit is visible."""
    if img.height >= height:
        return img.convert("RGB")
    factor = max(1, round(height / img.height))
    return img.convert("RGB").resize((img.width * factor, img.height * factor), Image.NEAREST)


def _quality(pred: np.ndarray, truth: np.ndarray, border: int, prefix: str = "") -> dict[str, float]:
    from ganserve.training import metrics

    p, t = _rgb(pred), _rgb(truth)
    return {f"{prefix}psnr_y": metrics.psnr_y(p, t, border), f"{prefix}ssim_y": metrics.ssim_y(p, t, border)}


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    reply = call()
    return reply, (time.perf_counter() - t0) * 1e3


def super_resolution(client, card: ModelCard, ex) -> Outcome:
    """SuperResolve the LR photo; baseline: bicubic upscaling of the same 8-bit LR image."""
    import torch

    from ganserve.training.data.images import upscale_bicubic

    reply, ms = _timed(lambda: client.super_resolve(card.name, png(ex.image)))
    out = np.asarray(Image.open(io.BytesIO(reply.image)).convert("RGB"))
    lr = torch.from_numpy(_rgb(ex.image).astype(np.float32).transpose(2, 0, 1)[None])
    bic = upscale_bicubic(lr, card.scale)[0].permute(1, 2, 0).clamp(0, 1).numpy()
    bic8 = np.rint(bic * 255.0).astype(np.uint8)
    row = {"example": ex.name, "request_ms": ms, "input_size": list(ex.image.shape[:2]), "output_size": list(out.shape[:2]),
           **_quality(out, ex.truth, card.scale), **_quality(bic8, ex.truth, card.scale, "baseline_")}
    lr_img = Image.fromarray(ex.image)
    return Outcome(row, [
        (lr_img.resize((out.shape[1], out.shape[0]), Image.NEAREST), "input (LR, nearest)"),
        (Image.fromarray(bic8), f"bicubic {row['baseline_psnr_y']:.2f} dB"),
        (Image.fromarray(out), f"{card.name} {row['psnr_y']:.2f} dB"),
        (Image.fromarray(ex.truth), "ground truth"),
    ])


def _image_to_image(send: Callable[[Any, ModelCard, Any], Any]) -> Callable[[Any, ModelCard, Any], Outcome]:
    """Translate / Derain / AgeFace: baseline is the input itself (identity), when its size matches the truth."""

    def run(client, card: ModelCard, ex) -> Outcome:
        reply, ms = _timed(lambda: send(client, card, ex))
        out_img = Image.open(io.BytesIO(reply.image)).convert("RGB")
        out = np.asarray(out_img)
        row: dict[str, Any] = {"example": ex.name, "request_ms": ms, **({"condition": ex.condition} if ex.condition else {})}
        panels = [(_shown(Image.fromarray(ex.image), PANEL), "input")]
        label = card.name
        if ex.truth is not None:
            row.update(_quality(out, ex.truth, card.scale))
            label += f" {row['psnr_y']:.2f} dB"
            if ex.image.shape[:2] == ex.truth.shape[:2]:
                row.update(_quality(ex.image, ex.truth, card.scale, "baseline_"))
                panels[0] = (panels[0][0], f"input {row['baseline_psnr_y']:.2f} dB")
        panels.append((_shown(out_img, PANEL), label + (f" ({ex.condition})" if ex.condition else "")))
        if ex.truth is not None:
            panels.append((_shown(Image.fromarray(ex.truth), PANEL), "ground truth"))
        return Outcome(row, panels)

    return run


def classification(client, card: ModelCard, ex) -> Outcome:
    """Classify; the row says whether the top class is the true one."""
    reply, ms = _timed(lambda: client.classify(card.name, png(ex.image), top_k=3))
    top = reply.scores[0]
    row = {"example": ex.name, "request_ms": ms, "label": ex.label, "predicted": top.label,
           "probability": top.probability, "correct": float(top.label == ex.label)}
    return Outcome(row, [(_shown(Image.fromarray(ex.image), PANEL), f"true {ex.label}: {top.label} ({top.probability:.2f})")])


def generation(client, card: ModelCard, ex) -> Outcome:
    """Generate from a seed (and a class for conditional models); there is no truth to compare with."""
    reply, ms = _timed(lambda: client.generate(card.name, seed=ex.seed, condition=ex.condition))
    img = Image.open(io.BytesIO(reply.image))
    row = {"example": ex.name, "request_ms": ms, "seed": ex.seed, "condition": ex.condition}
    return Outcome(row, [(_shown(img, PANEL), f"seed {ex.seed}" + (f", class {ex.condition}" if ex.condition else ""))])


TASKS: dict[str, Callable[[Any, ModelCard, Any], Outcome]] = {
    "super_resolution": super_resolution,
    "translation": _image_to_image(lambda client, card, ex: client.translate(card.name, png(ex.image))),
    "derain": _image_to_image(lambda client, card, ex: client.derain(card.name, png(ex.image))),
    "face_aging": _image_to_image(lambda client, card, ex: client.age_face(card.name, png(ex.image), ex.condition)),
    "classification": classification,
    "generation": generation,
}


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over a model's examples: quality vs baseline for images, accuracy for classifiers, request time."""
    out: dict[str, float] = {"examples": float(len(rows))}
    for key in ("psnr_y", "baseline_psnr_y", "ssim_y", "baseline_ssim_y", "correct", "request_ms"):
        values = [r[key] for r in rows if key in r]
        if values:
            out["accuracy" if key == "correct" else key] = float(np.mean(values))
    return out
