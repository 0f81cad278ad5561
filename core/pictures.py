"""Pictures for people (numpy and Pillow, torch-free): sample grids, captioned side-by-sides, exact enlargement, PNG,
and the main job's contact sheet with text legible at the size it is shown.

Float pixels become 8 bits with the project's one rule, ``image_metrics.to_uint8``.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ganserve.core.image_metrics import LUMA_WEIGHTS, to_uint8

Box = tuple[int, int, int, int]  # (left, top, right, bottom) pixels, as Pillow's crop takes them


def picture_grid(columns: list[np.ndarray]) -> np.ndarray:
    """Columns of NCHW batches in [0, 1] (one shape) -> one HxWx3 uint8 picture, one row per item."""
    rows = [np.concatenate([c[i] for c in columns], axis=2) for i in range(columns[0].shape[0])]
    return to_uint8(np.concatenate(rows, axis=1).transpose(1, 2, 0))


def to_pil(image: np.ndarray) -> Image.Image:
    """HxWx3 float pixels in [0, 1] -> an 8-bit RGB image."""
    return Image.fromarray(to_uint8(image))


def labelled_row(panels: list[tuple[Image.Image, str]], header: int = 16) -> Image.Image:
    """Images of one height side by side on white, each under a one-line caption ``header`` pixels tall."""
    sheet = Image.new("RGB", (sum(img.width for img, _ in panels), panels[0][0].height + header), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for img, caption in panels:
        sheet.paste(img, (x, header))
        draw.text((x + 3, 2), caption, fill="black")
        x += img.width
    return sheet


def stack(sheets: list[Image.Image]) -> Image.Image:
    """Pictures one under another, left-aligned on white (as wide as the widest)."""
    picture = Image.new("RGB", (max(s.width for s in sheets), sum(s.height for s in sheets)), "white")
    y = 0
    for sheet in sheets:
        picture.paste(sheet, (0, y))
        y += sheet.height
    return picture


def enlarge(img: Image.Image, factor: int) -> Image.Image:
    """Nearest-neighbour enlargement by a whole factor: every pixel becomes a factor x factor block."""
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def enlarge_to(img: Image.Image, height: int) -> Image.Image:
    """An RGB copy of ``img``; one shorter than ``height`` is enlarged (nearest, by the whole factor closest to
    height / img.height) so that a 16-pixel digit is visible."""
    rgb = img.convert("RGB")
    if img.height >= height:
        return rgb
    return enlarge(rgb, max(1, round(height / img.height)))


def png_bytes(image: np.ndarray) -> bytes:
    """HxWx3 (or HxW) uint8 pixels -> the bytes of a PNG file (Pillow's default compression)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


# -- the main job's contact sheet: legible text at the size the picture is shown -----------------------------------
SHEET_WIDTH = 1024  # the widest sheet: shown about 770 pixels wide in a README, text stays legible
PANEL_PX = 192  # smaller pictures (digits, faces, crops) are enlarged (nearest, whole factor) to about this height
CAPTION_PX = 15  # caption under each panel
TITLE_PX = 19  # a row's title (drawn bold), with its note in the caption size
_MARGIN, _GAP, _ROW_GAP = 12, 8, 22
_INK, _NOTE_INK, _RULE = (20, 20, 20), (70, 70, 70), (205, 205, 205)
_BITMAP_PX = 11  # line height of Pillow's fixed bitmap font, which is enlarged whole where no scalable font loads


@functools.lru_cache(maxsize=None)
def legible_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at ``size`` pixels: the scalable one (Pillow >= 10.1 with FreeType), else the fixed
    bitmap font, which `text_mask` enlarges by a whole factor so that text is still about ``size`` pixels tall."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow 10.0 takes no size
        return ImageFont.load_default()


def _text_factor(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, size: int) -> int:
    return 1 if isinstance(font, ImageFont.FreeTypeFont) else max(1, math.ceil(size / _BITMAP_PX))


def line_height(size: int) -> int:
    """Pixels from one line of text at ``size`` to the next (ascent + descent of the font)."""
    font = legible_font(size)
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return ascent + descent
    return _BITMAP_PX * _text_factor(font, size)


def _bold(font: ImageFont.FreeTypeFont | ImageFont.ImageFont, bold: bool) -> bool:
    return bold and isinstance(font, ImageFont.FreeTypeFont)  # the bitmap font's strokes are thick already


def text_width(text: str, size: int, bold: bool = False) -> int:
    """Width in pixels of one line of ``text`` drawn at ``size`` (bold adds a pixel)."""
    font = legible_font(size)
    width = math.ceil(font.getlength(text)) if text else 0
    return width * _text_factor(font, size) + int(_bold(font, bold))


def text_mask(text: str, size: int, bold: bool = False) -> Image.Image:
    """One line of text as an 8-bit coverage mask (255 = ink), ``line_height(size)`` tall; bold is the text drawn
    twice, one pixel apart."""
    font = legible_font(size)
    factor = _text_factor(font, size)
    mask = Image.new("L", (max(1, text_width(text, size, bold) // factor), line_height(size) // factor), 0)
    draw = ImageDraw.Draw(mask)
    for dx in (0, 1) if _bold(font, bold) else (0,):
        draw.text((dx, 0), text, fill=255, font=font)
    return enlarge(mask, factor) if factor > 1 else mask


def wrap_text(text: str, size: int, width: int, bold: bool = False) -> list[str]:
    """Greedy word wrap into lines at most ``width`` pixels wide (a single longer word keeps a line to itself)."""
    lines: list[str] = []
    for word in text.split():
        if lines and text_width(f"{lines[-1]} {word}", size, bold) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def draw_text(sheet: Image.Image, xy: tuple[int, int], text: str, size: int, bold: bool = False,
              fill: tuple[int, int, int] = _INK, max_width: int | None = None) -> None:
    """Draw one line of text with its top-left corner at ``xy`` (cut at ``max_width`` pixels when given)."""
    mask = text_mask(text, size, bold)
    if max_width is not None and mask.width > max_width:
        mask = mask.crop((0, 0, max_width, mask.height))
    sheet.paste(Image.new("RGB", mask.size, fill), xy, mask)


def detail_window(image: np.ndarray, size: int, step: int = 1) -> tuple[int, int]:
    """(top, left) of the ``size`` x ``size`` window with the most fine detail: the largest sum of absolute
    Laplacian of the luma (BT.601 weights, HxW or HxWx3 pixels). Corners are multiples of ``step``; ties go to the
    first in row-major order, so the choice is deterministic."""
    pixels = np.asarray(image, dtype=np.float64)
    luma = pixels[..., :3] @ np.array(LUMA_WEIGHTS) if pixels.ndim == 3 else pixels
    h, w = luma.shape
    if size > h or size > w:
        raise ValueError(f"window {size} x {size} does not fit in a {h} x {w} picture")
    lap = np.zeros_like(luma)
    lap[1:-1, 1:-1] = np.abs(4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1] - luma[1:-1, :-2] - luma[1:-1, 2:])
    integral = np.pad(lap.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    tops, lefts = np.arange(0, h - size + 1, step), np.arange(0, w - size + 1, step)
    sums = (integral[tops[:, None] + size, lefts[None, :] + size] - integral[tops[:, None], lefts[None, :] + size]
            - integral[tops[:, None] + size, lefts[None, :]] + integral[tops[:, None], lefts[None, :]])
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(tops[i]), int(lefts[j])


@dataclass
class SheetRow:
    """One row of a contact sheet: a title (drawn bold), a note under it (in the caption size) and captioned panels."""

    title: str
    panels: list[tuple[Image.Image, str]]
    note: str = ""


def _fit(panels: list[Image.Image], width: int, panel: int) -> list[Image.Image]:
    """RGB panels: one smaller than ``panel`` tall enlarged (`enlarge_to`); then, where the row is wider than
    ``width``, each shrunk to fit: an enlarged one by a smaller whole factor, any other with Lanczos."""
    shown = [enlarge_to(img, panel) for img in panels]
    room = width - _GAP * (len(shown) - 1)
    s = room / sum(img.width for img in shown)
    if s >= 1:
        return shown
    fitted = []
    for img, big in zip(panels, shown):
        factor = math.floor(big.height // img.height * s)
        if big.height > img.height and factor >= 1:
            fitted.append(enlarge(img.convert("RGB"), factor))
        else:
            fitted.append(big.resize((max(1, math.floor(big.width * s)), max(1, math.floor(big.height * s))),
                                     Image.Resampling.LANCZOS))
    return fitted


def contact_sheet(rows: list[SheetRow], max_width: int = SHEET_WIDTH, panel: int = PANEL_PX,
                  caption_px: int = CAPTION_PX, title_px: int = TITLE_PX) -> tuple[Image.Image, list[list[Box]]]:
    """Rows one under another on white, each: its title, its note under it, its panels side by side and a caption
    under each panel.

    The sheet is as wide as its widest row (at most ``max_width``); small panels are enlarged (nearest, whole
    factor) to about ``panel`` pixels tall and a row too wide is shrunk, but text is drawn at the sheet's own
    resolution (``title_px`` and ``caption_px`` tall), never scaled with the pictures. Returns the sheet and, per
    row, each panel's (left, top, right, bottom) box in it."""
    shown = [_fit([img for img, _ in row.panels], max_width - 2 * _MARGIN, panel) for row in rows]
    widest = max([sum(p.width for p in ps) + _GAP * (len(ps) - 1) for ps in shown]
                 + [text_width(row.title, title_px, bold=True) for row in rows])
    width = min(max_width, widest + 2 * _MARGIN)
    inner = width - 2 * _MARGIN
    title_h, caption_h = line_height(title_px), line_height(caption_px)
    layouts = []
    y = _MARGIN
    for row, panels in zip(rows, shown):
        title, note = wrap_text(row.title, title_px, inner, bold=True), wrap_text(row.note, caption_px, inner)
        captions = [wrap_text(text, caption_px, p.width) for p, (_, text) in zip(panels, row.panels)]
        panel_top = y + len(title) * title_h + len(note) * caption_h + 6
        caption_top = panel_top + max(p.height for p in panels) + 4
        layouts.append((y, title, note, panel_top, caption_top, captions))
        y = caption_top + max(len(c) for c in captions) * caption_h + _ROW_GAP
    sheet = Image.new("RGB", (width, y - _ROW_GAP + _MARGIN), "white")
    draw = ImageDraw.Draw(sheet)
    boxes: list[list[Box]] = []
    for k, (panels, (top, title, note, panel_top, caption_top, captions)) in enumerate(zip(shown, layouts)):
        if k:  # a thin rule half-way between rows
            draw.line([(_MARGIN, top - _ROW_GAP // 2), (width - _MARGIN, top - _ROW_GAP // 2)], fill=_RULE)
        for i, line in enumerate(title):
            draw_text(sheet, (_MARGIN, top + i * title_h), line, title_px, bold=True)
        for i, line in enumerate(note):
            draw_text(sheet, (_MARGIN, top + len(title) * title_h + i * caption_h), line, caption_px, fill=_NOTE_INK)
        x, row_boxes = _MARGIN, []
        for p, lines in zip(panels, captions):
            sheet.paste(p, (x, panel_top))
            row_boxes.append((x, panel_top, x + p.width, panel_top + p.height))
            for i, line in enumerate(lines):  # centred under the panel
                left = x + max(0, (p.width - text_width(line, caption_px)) // 2)
                draw_text(sheet, (left, caption_top + i * caption_h), line, caption_px, max_width=p.width)
            x += p.width + _GAP
        boxes.append(row_boxes)
    return sheet, boxes
