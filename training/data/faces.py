"""Faces with known identity and age: a procedural renderer (the known-truth test bed) and a UTKFace-name folder loader.

An identity is a frozen parameter vector (head shape, skin tone, eye/brow/nose/mouth geometry, hair colour and
style, how early the hair greys or recedes, how readily the skin wrinkles, where age spots will appear); age is
continuous (0-80) and acts as on real faces: child proportions (large cranium, low eye line, big eyes, small nose
and jaw, round cheeks) up to 18, then nasolabial folds, forehead lines, crow's feet, eye bags, greying and receding
hair, thinner lips, sagging jowls and age spots. A scene (lighting, colour cast, background, small pose jitter) is
drawn separately, so the same person in the same scene can be rendered at any age: "this face at 60" has a true
answer. Faces of disjoint identity pools (training, held out, judges) come from disjoint seed streams.

These faces are cartoons: a model trained on them does not transfer to photographs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, UnidentifiedImageError

from ganserve.core.errors import GanserveError
from ganserve.training.age_groups import AGE_GROUPS, MAX_AGE, age_group

SIZES = (64, 128)

# Identity pools draw from disjoint seed streams: the generator trains on "train" (and its loss networks too),
# evaluation uses "held_out", the independent judges learn from "judge" only.
POOLS = {"train": 1, "held_out": 2, "judge": 3}

_SKIN_LIGHT = np.array([238.0, 206.0, 182.0])
_SKIN_DARK = np.array([102.0, 66.0, 46.0])
_HAIR = [(20, 16, 14), (58, 38, 24), (104, 70, 40), (150, 72, 36), (206, 170, 104), (176, 92, 44), (36, 28, 26)]
_IRIS = [(70, 44, 24), (48, 84, 140), (64, 110, 70), (100, 108, 116), (30, 22, 18)]
_GREY = np.array([196.0, 196.0, 200.0])


@dataclass(frozen=True)
class FaceIdentity:
    """Everything that makes a face this person's, at every age."""

    head_w: float
    head_h: float
    jaw: float
    skin: tuple[float, float, float]
    eye_sep: float
    eye_w: float
    eye_open: float
    eye_tilt: float
    iris: tuple[int, int, int]
    brow_thick: float
    brow_arch: float
    brow_gap: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lip: float
    hair: tuple[int, int, int]
    hair_style: int  # 0 short, 1 fringe, 2 long, 3 side part
    hair_volume: float
    ear: float
    grey_onset: float  # age at which greying starts
    balding: float  # 0 = keeps the hairline
    wrinkling: float  # how readily lines appear (1 = average)
    spots: int  # seed of where age spots appear


@dataclass(frozen=True)
class Scene:
    """What is not the person: lighting, colour cast, background and a small pose jitter."""

    bg_a: tuple[int, int, int]
    bg_b: tuple[int, int, int]
    bg_angle: float
    light_angle: float
    light: float
    ambient: float
    cast: tuple[float, float, float]
    dx: float
    dy: float
    rot: float
    scale: float


def _rng(pool: str, index: int, stream: int) -> np.random.Generator:
    if pool not in POOLS:
        raise GanserveError(f"unknown identity pool {pool!r} (one of {', '.join(POOLS)})")
    if index < 0:
        raise GanserveError(f"identity index must be >= 0, got {index}")
    return np.random.default_rng(np.random.SeedSequence([POOLS[pool], index, stream]))


def identity(pool: str, index: int) -> FaceIdentity:
    """Identity number ``index`` of a pool: the same arguments always give the same person."""
    r = _rng(pool, index, 0)
    tone = r.uniform(0.0, 1.0)
    skin = _SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone + r.normal(0, 6, 3)
    return FaceIdentity(
        head_w=float(r.uniform(0.86, 1.04)),
        head_h=float(r.uniform(1.22, 1.40)),
        jaw=float(r.uniform(0.55, 0.9)),
        skin=tuple(float(v) for v in np.clip(skin, 30, 250)),  # type: ignore[arg-type]
        eye_sep=float(r.uniform(0.34, 0.46)),
        eye_w=float(r.uniform(0.15, 0.21)),
        eye_open=float(r.uniform(0.42, 0.68)),
        eye_tilt=float(r.uniform(-0.12, 0.12)),
        iris=_IRIS[int(r.integers(len(_IRIS)))],
        brow_thick=float(r.uniform(0.035, 0.075)),
        brow_arch=float(r.uniform(0.0, 0.07)),
        brow_gap=float(r.uniform(0.13, 0.22)),
        nose_len=float(r.uniform(0.32, 0.48)),
        nose_w=float(r.uniform(0.11, 0.2)),
        mouth_w=float(r.uniform(0.26, 0.42)),
        lip=float(r.uniform(0.05, 0.09)),
        hair=_HAIR[int(r.integers(len(_HAIR)))],
        hair_style=int(r.integers(4)),
        hair_volume=float(r.uniform(0.08, 0.22)),
        ear=float(r.uniform(0.16, 0.24)),
        grey_onset=float(r.uniform(33.0, 41.0)),
        balding=float(0.0 if r.uniform() < 0.55 else r.uniform(0.35, 1.0)),
        wrinkling=float(r.uniform(0.88, 1.12)),
        spots=int(r.integers(2**31)),
    )


def scene(pool: str, index: int, variant: int = 0) -> Scene:
    """Scene ``variant`` of identity ``index``: lighting, background and pose, independent of age."""
    r = _rng(pool, index, 1000 + variant)
    bg = r.integers(20, 236, size=(2, 3))
    return Scene(
        bg_a=tuple(int(v) for v in bg[0]),  # type: ignore[arg-type]
        bg_b=tuple(int(v) for v in bg[1]),  # type: ignore[arg-type]
        bg_angle=float(r.uniform(0, 2 * math.pi)),
        light_angle=float(r.uniform(0, 2 * math.pi)),
        light=float(r.uniform(0.0, 0.3)),
        ambient=float(r.uniform(0.86, 1.08)),
        cast=tuple(float(v) for v in r.uniform(0.94, 1.06, 3)),  # type: ignore[arg-type]
        dx=float(r.uniform(-0.035, 0.035)),
        dy=float(r.uniform(-0.035, 0.035)),
        rot=float(r.uniform(-7.0, 7.0)),
        scale=float(r.uniform(0.95, 1.05)),
    )


def _ramp(age: float, start: float, span: float) -> float:
    """0 before ``start``, rising linearly to 1 over ``span`` years."""
    return float(np.clip((age - start) / span, 0.0, 1.0))


def _mix(a: tuple[float, ...] | np.ndarray, b: tuple[float, ...] | np.ndarray, t: float) -> tuple[int, int, int]:
    v = np.asarray(a, dtype=np.float64) * (1 - t) + np.asarray(b, dtype=np.float64) * t
    return tuple(int(round(x)) for x in np.clip(v, 0, 255))  # type: ignore[return-value]


class _Canvas:
    """Face-space drawing (x right, y down; head half-width ~ 1) mapped through the scene's pose onto pixels."""

    def __init__(self, size: int, sc: Scene) -> None:
        self.size = size
        self.img = Image.new("RGB", (size, size))
        self.draw = ImageDraw.Draw(self.img)
        self.unit = size * 0.3 * sc.scale
        self.cx = size * (0.5 + sc.dx)
        self.cy = size * (0.53 + sc.dy)
        t = math.radians(sc.rot)
        self.cos, self.sin = math.cos(t), math.sin(t)

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + self.unit * (x * self.cos - y * self.sin), self.cy + self.unit * (x * self.sin + y * self.cos))

    def poly(self, pts: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        self.draw.polygon([self.px(x, y) for x, y in pts], fill=fill)

    def ellipse(self, x: float, y: float, rx: float, ry: float, fill: tuple[int, int, int], n: int = 28,
                a0: float = 0.0, a1: float = 2 * math.pi) -> None:
        self.poly(_arc(x, y, rx, ry, a0, a1, n), fill)

    def line(self, pts: list[tuple[float, float]], fill: tuple[int, int, int], width: float) -> None:
        self.draw.line([self.px(x, y) for x, y in pts], fill=fill, width=max(1, int(round(width * self.unit))),
                       joint="curve")


def _arc(x: float, y: float, rx: float, ry: float, a0: float, a1: float, n: int) -> list[tuple[float, float]]:
    return [(x + rx * math.cos(a), y + ry * math.sin(a)) for a in np.linspace(a0, a1, n)]


def _head_outline(f: FaceIdentity, w: float, h: float, jaw: float, sag: float) -> list[tuple[float, float]]:
    """Cranium (upper half-ellipse) on a jaw that narrows towards the chin; ``sag`` widens the lower cheeks."""
    pts = _arc(0, 0, w, h * 0.9, math.pi, 2 * math.pi, 24)
    for t in np.linspace(0, 1, 14):
        y = t * h
        half = w * (1 - (1 - jaw) * t**1.6) * math.sqrt(max(0.0, 1 - t**6)) + sag * math.sin(t * math.pi) * 0.08
        pts.append((half, y))
    lower = [(x, y) for x, y in pts[24:]]
    pts += [(-x, y) for x, y in reversed(lower)]
    return pts


def render(f: FaceIdentity, age: float, sc: Scene, size: int = 64) -> np.ndarray:
    """The face of identity ``f`` at ``age`` years in scene ``sc`` as a size x size x 3 uint8 image."""
    if size not in SIZES:
        raise GanserveError(f"face size must be one of {SIZES}, got {size}")
    if not math.isfinite(age) or not 0 <= age <= MAX_AGE:
        raise GanserveError(f"age must be in [0, {MAX_AGE:g}], got {age!r}")
    c = _Canvas(size * 2, sc)
    child = float(np.clip((18.0 - age) / 18.0, 0.0, 1.0))
    old = _ramp(age, 30, 45)
    lines = float(np.clip(f.wrinkling * _ramp(age, 30, 36), 0, 1.2))
    grey = _ramp(age, f.grey_onset, 24)
    recede = f.balding * _ramp(age, 24, 40)
    skin_v = np.asarray(f.skin) * (1 - 0.08 * old) + np.array([8.0, 4.0, -6.0]) * old  # sallower with age
    skin = _mix(skin_v, skin_v, 0)
    shade = _mix(skin_v, (40, 20, 15), 0.38)
    hair = _mix(np.asarray(f.hair, dtype=np.float64) * (1 + 0.25 * child), _GREY, grey * 0.92)

    w = f.head_w * (1 + 0.06 * child)
    h = f.head_h * (1 - 0.13 * child)
    jaw = min(0.95, f.jaw + 0.22 * child)
    # Vertical landmarks: children's eyes sit lower on a larger cranium, their lower face is short.
    eye_y = 0.05 + 0.2 * child
    nose_tip = eye_y + f.nose_len * (1 - 0.35 * child)
    mouth_y = nose_tip + (0.2 + 0.06 * (1 - child)) * (1 - 0.15 * child)
    eye_w = f.eye_w * (1 + 0.3 * child)

    # background gradient (numpy), drawn under the face
    ys, xs = np.mgrid[0 : c.size, 0 : c.size].astype(np.float32) / c.size - 0.5
    t = np.clip(0.5 + xs * math.cos(sc.bg_angle) + ys * math.sin(sc.bg_angle), 0, 1)[..., None]
    bg = np.asarray(sc.bg_a, np.float32) * (1 - t) + np.asarray(sc.bg_b, np.float32) * t
    c.img.paste(Image.fromarray(bg.astype(np.uint8)))

    # long hair behind the head, neck, ears, head
    if f.hair_style == 2:
        c.poly([(-w - f.hair_volume, -0.2), (w + f.hair_volume, -0.2), (w + 0.15, 1.9), (-w - 0.15, 1.9)], hair)
    c.poly([(-0.42 * w, h * 0.6), (0.42 * w, h * 0.6), (0.5 * w, 2.0), (-0.5 * w, 2.0)], shade)
    c.poly([(-0.42 * w, h * 0.6), (0.42 * w, h * 0.6), (0.46 * w, 2.0), (-0.46 * w, 2.0)], skin)
    for side in (-1, 1):
        c.ellipse(side * w * 0.98, eye_y + 0.12, f.ear * 0.55, f.ear, shade)
        c.ellipse(side * w * 0.96, eye_y + 0.12, f.ear * 0.42, f.ear * 0.85, skin)
    c.poly(_head_outline(f, w, h, jaw, old * 0.9), skin)

    # hair cap: covers the cranium down to the hairline, which recedes with age for balding identities
    line_y = -h * 0.9 * (0.55 - 0.32 * child + 0.35 * recede)
    if recede < 0.95:
        cap = _arc(0, 0, w + f.hair_volume * (1 - 0.6 * recede), h * 0.9 + f.hair_volume * (1 - recede), math.pi,
                   2 * math.pi, 24)
        side_y = eye_y - 0.1 if f.hair_style != 2 else eye_y + 0.3
        if f.hair_style == 1:  # fringe: a straight cut low on the forehead
            front = [(w * 0.95, side_y), (w * 0.8, line_y + 0.25), (-w * 0.8, line_y + 0.25), (-w * 0.95, side_y)]
        elif f.hair_style == 3:  # side part: a slanted hairline
            front = [(w * 0.95, side_y), (w * 0.6, line_y + 0.1), (-w * 0.3, line_y - 0.05), (-w * 0.95, side_y)]
        else:
            front = [(w * 0.95, side_y), (w * 0.55, line_y), (0, line_y - 0.05), (-w * 0.55, line_y), (-w * 0.95, side_y)]
        c.poly(cap + [(w * 1.02, side_y)] + front + [(-w * 1.02, side_y)], hair)
    if recede > 0.15:  # the bald top: a cap of the cranium that widens and deepens with age
        delta = 0.25 + 0.9 * (1 - recede)
        c.poly(_arc(0, 0, w, h * 0.9, math.pi + delta, 2 * math.pi - delta, 20), skin)

    # forehead lines and nasolabial folds under everything else on the face
    crease = _mix(skin_v, (60, 30, 20), 0.35 + 0.3 * min(lines, 1))
    if lines > 0.05:  # one crease in the thirties, then one more per decade
        count = 1 + int(3.2 * min(lines, 1))
        top = max(line_y + 0.12, -h * 0.7)
        for k in range(count):
            y = eye_y - 0.28 - k * 0.1
            if y < top:
                break
            c.line(_wave(-0.45 * w, 0.45 * w, y, 0.02, f.spots + k), crease, 0.02 + 0.015 * min(lines, 1))
    fold = float(np.clip(f.wrinkling * _ramp(age, 22, 40), 0, 1))
    if fold > 0.05:
        for side in (-1, 1):
            c.line([(side * f.nose_w * 1.1, nose_tip - 0.03), (side * (f.mouth_w * 0.62 + 0.05), mouth_y - 0.02),
                    (side * (f.mouth_w * 0.55 + 0.06), mouth_y + 0.14 * fold)],
                   _mix(skin_v, (60, 30, 20), 0.2 + 0.3 * fold), 0.016 + 0.018 * fold)
    if child > 0:  # round rosy cheeks
        for side in (-1, 1):
            c.ellipse(side * w * 0.55, mouth_y - 0.12, 0.16, 0.11, _mix(skin_v, (230, 110, 110), 0.22 * child))

    # eyes, bags and crow's feet
    bag = float(np.clip(f.wrinkling * _ramp(age, 40, 28), 0, 1))
    crow = float(np.clip(f.wrinkling * _ramp(age, 36, 30), 0, 1))
    for side in (-1, 1):
        ex = side * f.eye_sep * (1 - 0.06 * child)
        ey = eye_y + side * f.eye_tilt * 0.1
        eh = eye_w * f.eye_open * (1 + 0.25 * child) * (1 - 0.18 * old)
        if bag > 0.05:
            c.ellipse(ex, ey + eh * 1.1, eye_w * 0.9, eh * (0.5 + 0.6 * bag), _mix(skin_v, (70, 40, 45), 0.3 * bag))
        c.ellipse(ex, ey, eye_w, eh, (240, 240, 236))
        c.ellipse(ex, ey, eh * 0.95, eh * 0.95, f.iris)
        c.ellipse(ex, ey, eh * 0.42, eh * 0.42, (12, 10, 10))
        c.line(_arc(ex, ey, eye_w, eh, math.pi, 2 * math.pi, 10), _mix(skin_v, (20, 10, 10), 0.6), 0.02)
        if crow > 0.05:
            for k in (-1, 0, 1):
                x0 = ex + side * (eye_w + 0.03)
                c.line([(x0, ey + k * 0.04), (x0 + side * 0.1 * (0.6 + crow), ey + k * 0.08)],
                       _mix(skin_v, (60, 30, 20), 0.25 + 0.3 * crow), 0.015)
        # eyebrow: thinner and greyer with age
        by = ey - eh - f.brow_gap * (1 - 0.2 * child)
        bw = eye_w * 1.15
        brow = _mix(np.asarray(f.hair, dtype=np.float64) * 0.8, _GREY, grey * 0.8)
        c.line([(ex - bw, by + 0.02), (ex, by - f.brow_arch), (ex + bw, by + 0.02)], brow,
               f.brow_thick * (1 - 0.3 * old) * (1 - 0.3 * child))

    # nose: shading line and nostrils, small for children
    nw = f.nose_w * (1 - 0.3 * child)
    c.line([(0.03, eye_y + 0.08), (0.05, nose_tip - 0.02)], shade, 0.022)
    c.ellipse(0, nose_tip, nw, 0.06 * (1 - 0.3 * child), shade)
    c.ellipse(0, nose_tip - 0.02, nw * 0.8, 0.05 * (1 - 0.3 * child), skin)
    for side in (-1, 1):
        c.ellipse(side * nw * 0.45, nose_tip + 0.02, nw * 0.18, 0.025, _mix(skin_v, (30, 10, 10), 0.6))

    # mouth: lips thin with age, the corners droop
    mw = f.mouth_w * (1 - 0.25 * child)
    lip = f.lip * (1 + 0.2 * child) * (1 - 0.55 * old)
    lip_col = _mix(skin_v, (170, 60, 70), 0.45 * (1 - 0.4 * old))
    droop = 0.05 * old
    c.poly([(-mw, mouth_y + droop), (-mw * 0.3, mouth_y - lip), (0, mouth_y - lip * 0.7), (mw * 0.3, mouth_y - lip),
            (mw, mouth_y + droop), (mw * 0.4, mouth_y + lip * 1.3), (-mw * 0.4, mouth_y + lip * 1.3)], lip_col)
    c.line([(-mw, mouth_y + droop), (0, mouth_y + 0.005), (mw, mouth_y + droop)], _mix(skin_v, (40, 10, 10), 0.65),
           0.014)

    # age spots: positions fixed per identity, more and darker with age
    n_spots = int(14 * _ramp(age, 50, 25))
    if n_spots:
        r = np.random.default_rng(f.spots)
        where = r.uniform([-0.7, -0.9], [0.7, 0.6], size=(14, 2))
        for x, y in where[:n_spots]:
            c.ellipse(x * w, eye_y + y * h * 0.8, 0.03, 0.026, _mix(skin_v, (90, 55, 30), 0.4), n=10)

    # down to the output size (antialiasing), then scene lighting and colour cast
    img = np.asarray(c.img.resize((size, size), Image.Resampling.BOX), dtype=np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    light = sc.ambient + sc.light * (xs * math.cos(sc.light_angle) + ys * math.sin(sc.light_angle)) * 2
    img = img * light[..., None] * np.asarray(sc.cast, np.float32)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def _wave(x0: float, x1: float, y: float, amp: float, seed: int) -> list[tuple[float, float]]:
    """A gently wavy horizontal line (a forehead crease), its shape fixed by ``seed``."""
    phase = (seed % 997) / 997 * 2 * math.pi
    return [(x, y + amp * math.sin(phase + 7 * (x - x0))) for x in np.linspace(x0, x1, 9)]


# -- UTKFace-named folders ---------------------------------------------------------------------------------------
UTK_SUFFIXES = (".jpg", ".jpeg", ".png")
# 25_0_1_20170116174525125.jpg, and the aligned-crop variant 25_0_1_20170116174525125.jpg.chip.jpg
_UTK_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)(?:\.jpg\.chip)?\.(?:jpe?g|png)$", re.IGNORECASE)


@dataclass(frozen=True)
class UTKName:
    """The labels a UTKFace file name carries."""

    age: int
    gender: int
    race: int
    stamp: str


def parse_utkface_name(name: str) -> UTKName | None:
    """``<age>_<gender>_<race>_<stamp>.jpg`` -> labels; None for a name that does not follow the pattern."""
    m = _UTK_NAME.match(Path(name).name)
    if m is None:
        return None
    age = int(m.group(1))
    if age > 116:  # UTKFace's oldest; larger numbers are misnamed files
        return None
    return UTKName(age, int(m.group(2)), int(m.group(3)), m.group(4))


@dataclass
class FaceFolder:
    """Faces from a user folder: size x size images with their ages, and what was skipped and why."""

    images: np.ndarray  # N x size x size x 3 uint8
    ages: np.ndarray  # N float32 years
    files: int
    misnamed: int
    undecodable: int

    def facts(self) -> dict[str, int | list[int]]:
        groups = np.bincount([age_group(float(a)) for a in self.ages], minlength=len(AGE_GROUPS))
        return {"images": int(len(self.ages)), "files": self.files, "misnamed": self.misnamed,
                "undecodable": self.undecodable, "per_group": [int(g) for g in groups]}


def load_utkface_folder(folder: str | Path, size: int = 64) -> FaceFolder:
    """Every UTKFace-named image under ``folder`` (recursive), centre-cropped square and resized; bad files counted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GanserveError(f"face folder {folder}: no such directory")
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in UTK_SUFFIXES)
    images, ages = [], []
    misnamed = undecodable = 0
    for path in paths:
        label = parse_utkface_name(path.name)
        if label is None:
            misnamed += 1
            continue
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                side = min(im.size)
                left, top = (im.width - side) // 2, (im.height - side) // 2
                im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
                images.append(np.asarray(im, dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            undecodable += 1
            continue
        ages.append(float(min(label.age, MAX_AGE)))
    if not images:
        raise GanserveError(f"face folder {folder}: no usable UTKFace-named images among {len(paths)} files "
                            f"({misnamed} misnamed, {undecodable} undecodable); names look like 25_0_1_20170116.jpg")
    return FaceFolder(np.stack(images), np.asarray(ages, np.float32), len(paths), misnamed, undecodable)
