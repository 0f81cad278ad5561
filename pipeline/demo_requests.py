"""What the main job asks a served model, chosen by its card's roles: send each held-out example through the image
API, measure the answer against the truth and the obvious baseline, and draw a labelled side-by-side (and the
row of the main picture: `main_row`)."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from PIL import Image

from ganserve.core.card_roles import rpc_for
from ganserve.core.contract import ModelCard
from ganserve.core.errors import GanserveError
from ganserve.core.image_metrics import colourfulness, from_uint8, psnr_rgb, psnr_y, ssim_rgb, ssim_y, to_uint8
from ganserve.core.pictures import SheetRow, detail_window, enlarge, enlarge_to, png_bytes

PANEL = 192  # small pictures (digits, faces) are shown at least this tall, nearest-neighbour
CROP = 96  # super-resolution in the main picture: crops this many output pixels square, enlarged to about PANEL


@dataclass
class Outcome:
    """One example's figures (for the summary table), its side-by-side panels, and what the main picture shows of it:
    ``figure`` (empty: the side-by-side panels), a ``note`` on them, and what the row's baseline_* figures measure."""

    row: dict[str, Any]
    panels: list[tuple[Image.Image, str]] = field(default_factory=list)
    figure: list[tuple[Image.Image, str]] = field(default_factory=list)
    note: str = ""
    baseline: str = ""


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
    crops, note = detail_crops(ex.image, bic8, out, ex.truth, card.scale, card.name)
    return Outcome(row, [
        (lr_img.resize((out.shape[1], out.shape[0]), Image.NEAREST), "input (LR, nearest)"),
        (Image.fromarray(bic8), f"bicubic {row['baseline_psnr_y']:.2f} dB"),
        (Image.fromarray(out), f"{card.name} {row['psnr_y']:.2f} dB"),
        (Image.fromarray(ex.truth), "ground truth"),
    ], figure=crops, note=note, baseline="bicubic")


def detail_crops(lr: np.ndarray, bicubic: np.ndarray, sr: np.ndarray, truth: np.ndarray, scale: int, name: str,
                 crop: int = CROP) -> tuple[list[tuple[Image.Image, str]], str]:
    """The same square of the input, bicubic, model output and truth, where the truth has the most fine detail
    (`pictures.detail_window`, corner on the input's pixel grid): ``crop`` output pixels (fewer in a smaller
    picture) enlarged by a whole factor to about PANEL tall (nearest), the input's by ``scale`` times more; each
    caption states its factor. Returns the panels and a note saying where the crop is."""
    h, w = truth.shape[:2]
    size = max(scale, min(crop, h, w) // scale * scale)
    top, left = detail_window(truth, size, step=scale)
    zoom = max(1, round(PANEL / size))

    def region(pixels: np.ndarray) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(pixels[top:top + size, left:left + size]))

    small = np.ascontiguousarray(lr[top // scale:(top + size) // scale, left // scale:(left + size) // scale])
    panels = [(enlarge(Image.fromarray(small), zoom * scale), f"input (LR) {zoom * scale}x"),
              (enlarge(region(bicubic), zoom), f"bicubic {zoom}x"), (enlarge(region(sr), zoom), f"{name} {zoom}x"),
              (enlarge(region(truth), zoom), f"ground truth {zoom}x")]
    note = (f"figures over the whole {w}x{h} picture; crops: the {size}x{size} output pixels at x {left}, y {top} "
            "with the most fine detail in the truth, enlarged (nearest)")
    return panels, note


def _colour_figures(pred: np.ndarray, truth: np.ndarray, prefix: str = "") -> dict[str, float]:
    """PSNR/SSIM on RGB and the colourfulness (Hasler-Suesstrunk) of ``pred`` and of the truth."""
    p, t = from_uint8(pred), from_uint8(truth)
    return {f"{prefix}psnr": psnr_rgb(p, t), f"{prefix}ssim": ssim_rgb(p, t), f"{prefix}colourfulness": colourfulness(p),
            **({} if prefix else {"truth_colourfulness": colourfulness(t)})}


def _rgb_headline(card: ModelCard) -> bool:
    """Whether the card judges the model on RGB figures (translation: psnr, psnr_ab, ...) rather than on luma."""
    key = card.metrics.get("quality_key")
    return isinstance(key, str) and key.startswith("psnr") and not key.startswith("psnr_y")


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
        row.update(_colour_figures(out, ex.truth))
        rgb = _rgb_headline(card)  # a translation card's figures are on RGB (luma alone cannot judge colour)
        label += f" {row['psnr' if rgb else 'psnr_y']:.2f} dB"
        if ex.image.shape[:2] == ex.truth.shape[:2]:
            row.update(_quality(ex.image, ex.truth, card.scale, "baseline_"))
            row.update(_colour_figures(ex.image, ex.truth, "baseline_"))
            panels[0] = (panels[0][0], f"input {row['baseline_psnr' if rgb else 'baseline_psnr_y']:.2f} dB")
    panels.append((enlarge_to(out_img, PANEL), label + (f" ({ex.condition})" if ex.condition else "")))
    if ex.truth is not None:
        panels.append((enlarge_to(Image.fromarray(ex.truth), PANEL), "ground truth"))
    return Outcome(row, panels, baseline="input" if "baseline_psnr_y" in row else "")


def classification(client, card: ModelCard, ex) -> Outcome:
    """Classify; the row says whether the top class is the true one."""
    reply, ms = _timed(lambda: client.classify(card.name, png_bytes(ex.image), top_k=3))
    top = reply.scores[0]
    row = {"example": ex.name, "request_ms": ms, "label": ex.label, "predicted": top.label,
           "probability": top.probability, "correct": float(top.label == ex.label)}
    image = enlarge_to(Image.fromarray(ex.image), PANEL)
    return Outcome(row, [(image, f"true {ex.label}: {top.label} ({top.probability:.2f})")],
                   figure=[(image, f"input, true class {ex.label}")])


def generation(client, card: ModelCard, ex) -> Outcome:
    """Generate from a seed (and a class for conditional models); there is no truth to compare with."""
    reply, ms = _timed(lambda: client.generate(card.name, seed=ex.seed, condition=ex.condition))
    img = Image.open(io.BytesIO(reply.image))
    row = {"example": ex.name, "request_ms": ms, "seed": ex.seed, "condition": ex.condition}
    return Outcome(row, [(enlarge_to(img, PANEL), f"seed {ex.seed}" + (f", class {ex.condition}" if ex.condition else ""))])


def ask(client, card: ModelCard, ex) -> Outcome:
    """One held-out example through the RPC the card's roles call for (core.card_roles.rpc_for): Transform (with
    the bicubic baseline when the card's scale > 1), Classify or Generate."""
    rpc = rpc_for(card)
    if rpc == "Transform":
        return (upscaled if card.scale > 1 and ex.truth is not None else same_size)(client, card, ex)
    if rpc == "Classify":
        return classification(client, card, ex)
    if rpc == "Generate":
        return generation(client, card, ex)
    raise GanserveError(f"model {card.name!r}: no image API request fits its inputs and outputs "
                        f"({', '.join(t.role for t in card.inputs)} -> {', '.join(t.role for t in card.outputs)})")


_TASK_WORDS = {"super_resolution": "super-resolution", "face_aging": "face aging", "derain": "deraining"}


def task_words(card: ModelCard) -> str:
    """The card's task for people: "super-resolution x4", "translation", "face aging"."""
    words = _TASK_WORDS.get(card.task, card.task.replace("_", " "))
    return f"{words} x{card.scale}" if card.scale > 1 else words


def figures_line(card: ModelCard, outcome: Outcome) -> str:
    """The example's measured figures against its baseline ("PSNR-Y 30.21 dB vs bicubic 28.72 dB; SSIM-Y ..."), a
    classifier's answer, or (nothing to compare with) the card's own quality figure from export."""
    r, parts = outcome.row, []
    versus = f"vs {outcome.baseline or 'baseline'} "
    keys = ((("psnr", "PSNR", ".2f", " dB"), ("ssim", "SSIM", ".3f", "")) if _rgb_headline(card) and "psnr" in r
            else (("psnr_y", "PSNR-Y", ".2f", " dB"), ("ssim_y", "SSIM-Y", ".3f", "")))
    for key, name, form, unit in keys:
        if key in r:
            base = f" {versus}{r['baseline_' + key]:{form}}{unit}" if f"baseline_{key}" in r else ""
            parts.append(f"{name} {r[key]:{form}}{unit}{base}")
    if "truth_colourfulness" in r and _rgb_headline(card):
        parts.append(f"colourfulness {r['colourfulness']:.1f} vs truth {r['truth_colourfulness']:.1f}")
    if "correct" in r:
        parts.append(f"true {r['label']}, predicted {r['predicted']} (p {r['probability']:.2f}): "
                     + ("right" if r["correct"] else "wrong"))
        accuracy, chance = card.metrics.get("accuracy"), card.metrics.get("chance_accuracy")
        if isinstance(accuracy, (int, float)) and isinstance(chance, (int, float)):
            parts.append(f"held-out accuracy {accuracy:.1%} vs chance {chance:.1%} (model card)")
    if not parts:
        parts.append("no ground truth to compare with")
        key = card.metrics.get("quality_key")
        if isinstance(key, str) and isinstance(card.metrics.get(key), (int, float)):
            parts.append(f"model card: {key.replace('_', ' ')} {card.metrics[key]:.4g}")
    return "; ".join(parts)


def main_row(card: ModelCard, outcome: Outcome) -> SheetRow:
    """The example's row of the main picture: titled with the model's name and task, its figures against the
    baseline (and the figure's note) under the title, then its figure panels (the side-by-side's when it has none)."""
    note = "; ".join(part for part in (figures_line(card, outcome), outcome.note) if part)
    return SheetRow(f"{card.name}: {task_words(card)}", outcome.figure or outcome.panels, note)


def summarise(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over a model's examples: quality vs baseline for images, accuracy for classifiers, request time."""
    out: dict[str, float] = {"examples": float(len(rows))}
    for key in ("psnr_y", "baseline_psnr_y", "ssim_y", "baseline_ssim_y", "psnr", "baseline_psnr", "colourfulness",
                "truth_colourfulness", "correct", "request_ms"):
        values = [r[key] for r in rows if key in r]
        if values:
            out["accuracy" if key == "correct" else key] = float(np.mean(values))
    return out
