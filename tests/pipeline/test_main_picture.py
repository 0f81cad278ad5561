"""The main job's picture (demo-output/main_job.png) without a server: legible text, crisp small pictures, exact
super-resolution crops where the detail is, and rows labelled from the model card and the example's figures."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from PIL import Image

from ganserve.core.contract import ModelCard, TensorSpec
from ganserve.core.pictures import (CAPTION_PX, SHEET_WIDTH, SheetRow, contact_sheet, detail_window, line_height,
                                    png_bytes)
from ganserve.pipeline.demo import DemoModel, write_main_picture
from ganserve.pipeline.demo_requests import Outcome, ask, detail_crops, main_row

RNG = np.random.default_rng(11)
DIGIT = RNG.integers(0, 256, (8, 8), dtype=np.uint8)  # an 8x8 grey digit
FACE = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _blocks(src: np.ndarray, factor: int) -> np.ndarray:
    """``src`` (HxW or HxWx3) enlarged by whole blocks, as RGB."""
    rgb = np.repeat(src[..., None], 3, axis=2) if src.ndim == 2 else src
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def _sr_set(h: int = 160, w: int = 240, scale: int = 4) -> tuple[np.ndarray, ...]:
    """LR input, bicubic, model output and truth: the truth a smooth gradient and a bright smooth blob (much
    contrast, little fine detail) with one 96x96 square of fine texture at rows 40-135, columns 120-215."""
    rng = np.random.default_rng(5)  # the same set on every call
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    smooth = 60 + 0.3 * yy + 0.2 * xx + 120 * np.exp(-((yy - 30) ** 2 + (xx - 40) ** 2) / 300.0)
    truth = np.repeat(smooth[..., None], 3, axis=2)
    truth[40:136, 120:216] = rng.integers(0, 256, (96, 96, 3))
    truth = np.clip(truth, 0, 255).astype(np.uint8)
    lr = np.ascontiguousarray(truth[::scale, ::scale])
    bicubic = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    sr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return lr, bicubic, sr, truth


def _dark_rows(pixels: np.ndarray) -> np.ndarray:
    """Row indices holding dark (text) pixels: any channel-minimum below 128."""
    return np.nonzero((pixels.min(axis=2) < 128).any(axis=1))[0]


def _first_run(rows: np.ndarray) -> int:
    """Length of the first run of consecutive row indices."""
    gaps = np.nonzero(np.diff(rows) > 1)[0]
    return int((gaps[0] + 1) if gaps.size else rows.size)


def _sheet() -> tuple[np.ndarray, list, list[tuple[Image.Image, str]]]:
    lr, bicubic, sr, truth = _sr_set()
    crops, note = detail_crops(lr, bicubic, sr, truth, 4, "model")
    rows = [
        SheetRow("ssgan: classification", [(Image.fromarray(DIGIT), "input (true 3)")], "true 3, predicted 3"),
        SheetRow("face-aging: face aging", [(Image.fromarray(FACE), "input"), (Image.fromarray(FACE), "model (60+)")]),
        SheetRow("srresnet: super-resolution x4", crops, note),
        SheetRow("wide: translation", [(Image.new("RGB", (400, 300), (30, 60, 90)), "input")] * 4),  # 1600 px wide
    ]
    sheet, boxes = contact_sheet(rows)
    return np.asarray(sheet), boxes, crops


def test_sheet_fits_the_width_and_enlarges_small_pictures_by_exact_blocks() -> None:
    pixels, boxes, _ = _sheet()
    height, width = pixels.shape[:2]
    assert width <= SHEET_WIDTH
    for row in boxes:
        assert all(0 <= left < right <= width and 0 <= top < bottom <= height for left, top, right, bottom in row)
    wide = boxes[3]
    assert wide[-1][2] <= width and wide[0][3] - wide[0][1] < 300  # the 1600-pixel row was shrunk to fit
    (left, top, right, bottom), = boxes[0]
    assert bottom - top >= 128 and (bottom - top) % 8 == 0  # the 8x8 digit is shown big, by a whole factor
    np.testing.assert_array_equal(pixels[top:bottom, left:right], _blocks(DIGIT, (bottom - top) // 8))  # nearest
    for left, top, right, bottom in boxes[1]:  # the 64x64 face at the same height as the digit: 3x blocks
        assert bottom - top == boxes[0][0][3] - boxes[0][0][1] == 192
        np.testing.assert_array_equal(pixels[top:bottom, left:right], _blocks(FACE, 3))


def test_captions_and_titles_are_drawn_tall_enough_to_read() -> None:
    pixels, boxes, _ = _sheet()
    (left, top, right, bottom), = boxes[0]
    strip = pixels[bottom:bottom + 4 + 2 * line_height(CAPTION_PX), left:right]  # under the digit: "input (true 3)"
    dark = _dark_rows(strip)
    assert dark.size and dark.max() - dark.min() + 1 >= 12  # Pillow's fixed bitmap font gives 10 here
    title = _dark_rows(pixels[:top, :])  # above the first row's panels: its title, then its note
    assert _first_run(title) >= 16  # the 19-pixel bold title ("ssgan: classification": ascenders, descender)
    assert len(np.split(title, np.nonzero(np.diff(title) > 1)[0] + 1)) == 2  # title and note: two lines of text


def test_sr_crops_are_the_region_with_the_most_detail_enlarged_exactly_by_their_stated_factor() -> None:
    lr, bicubic, sr, truth = _sr_set()
    assert detail_window(truth, 96, step=4) == (40, 120)  # the textured square, not the bright smooth blob
    pixels, boxes, crops = _sheet()
    factors = [int(re.search(r"(\d+)x$", caption).group(1)) for _, caption in crops]
    assert factors == [8, 2, 2, 2]  # LR x4 further from 24 to 192 pixels; the others 96 -> 192
    sources = [lr[10:34, 30:54], bicubic[40:136, 120:216], sr[40:136, 120:216], truth[40:136, 120:216]]
    for (left, top, right, bottom), source, factor in zip(boxes[2], sources, factors):
        np.testing.assert_array_equal(pixels[top:bottom, left:right], _blocks(source, factor))
    note = detail_crops(lr, bicubic, sr, truth, 4, "model")[1]
    assert "whole 240x160 picture" in note and "the 96x96 output pixels at x 120, y 40 " in note


def _card(name: str, task: str, scale: int = 1, outputs: str = "image", inputs: str = "image", **metrics) -> ModelCard:
    return ModelCard(name=name, task=task, architecture="test", scale=scale, metrics=metrics,
                     inputs=[TensorSpec("x", [3, -1, -1], role=inputs)],
                     outputs=[TensorSpec("y", [3, -1, -1], role=outputs)])


def test_rows_are_labelled_with_model_task_and_figures_against_the_baseline() -> None:
    panel = [(Image.fromarray(FACE), "input")]
    sr = main_row(_card("srresnet", "super_resolution", 4), Outcome(
        {"psnr_y": 30.214, "baseline_psnr_y": 28.7226, "ssim_y": 0.8673, "baseline_ssim_y": 0.8319}, panel,
        baseline="bicubic"))
    assert sr.title == "srresnet: super-resolution x4"
    assert sr.note == "PSNR-Y 30.21 dB vs bicubic 28.72 dB; SSIM-Y 0.867 vs bicubic 0.832"
    cls = main_row(_card("ssgan", "classification", outputs="probabilities", accuracy=0.9684, chance_accuracy=0.102),
                   Outcome({"label": "3", "predicted": "5", "probability": 0.61, "correct": 0.0}, panel))
    assert cls.title == "ssgan: classification"
    assert cls.note == "true 3, predicted 5 (p 0.61): wrong; held-out accuracy 96.8% vs chance 10.2% (model card)"
    gen = main_row(_card("cvaegan", "generation", inputs="latent", quality_key="classes_covered", classes_covered=10.0),
                   Outcome({"seed": 0}, panel))
    assert gen.note == "no ground truth to compare with; model card: classes covered 10" and gen.panels == panel


def test_an_sr_answer_keeps_its_side_by_side_and_shows_crops_of_the_served_pixels() -> None:
    lr, _, sr, truth = _sr_set()
    client = SimpleNamespace(transform=lambda name, image, conditions=None: SimpleNamespace(image=png_bytes(sr)))
    example = SimpleNamespace(name="photo0", image=lr, truth=truth, condition="")
    outcome = ask(client, _card("srresnet", "super_resolution", 4), example)
    assert [img.size for img, _ in outcome.panels] == [(240, 160)] * 4  # the per-example file: four full pictures
    assert [caption for _, caption in outcome.panels][0] == "input (LR, nearest)" and outcome.baseline == "bicubic"
    served, = (np.asarray(img) for img, caption in outcome.figure if caption.startswith("srresnet"))
    np.testing.assert_array_equal(served, _blocks(sr[40:136, 120:216], 2))  # the reply's pixels, where the detail is
    bicubic, = (np.asarray(img) for img, caption in outcome.figure if caption.startswith("bicubic"))
    assert not np.array_equal(bicubic, served)


def test_the_main_picture_is_the_first_example_of_every_answered_model_in_the_models_order(tmp_path: Path) -> None:
    cards = {"cvaegan": _card("cvaegan", "generation", inputs="latent"),
             "derain": _card("derain", "derain"),
             "ssgan": _card("ssgan", "classification", outputs="probabilities")}
    models = [DemoModel(name, Path(f"{name}.pt"), "shipped") for name in cards]
    firsts = {"ssgan": Outcome({"label": "1", "predicted": "1", "probability": 1.0, "correct": 1.0},
                               [(Image.fromarray(DIGIT), "true 1: 1 (1.00)")]),
              "cvaegan": Outcome({"seed": 0}, [(Image.fromarray(FACE), "seed 0")])}  # derain answered nothing
    assert write_main_picture(tmp_path / "none.png", models, cards, {}) is None and not (tmp_path / "none.png").exists()
    path = write_main_picture(tmp_path / "main_job.png", models, cards, firsts)
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    in_order, _ = contact_sheet([main_row(cards[name], firsts[name]) for name in ("cvaegan", "ssgan")])
    reversed_order, _ = contact_sheet([main_row(cards[name], firsts[name]) for name in ("ssgan", "cvaegan")])
    np.testing.assert_array_equal(pixels, np.asarray(in_order))
    assert not np.array_equal(pixels, np.asarray(reversed_order))
