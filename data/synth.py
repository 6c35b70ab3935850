"""Synthetic MILAN eraser captures in exactly the delivered format.

This is the product's embedded demo data and the data of every test. Each eraser is rendered
from a handful of random choices drawn from ``np.random.default_rng([seed, index])``, so a
data set is byte-identical for a seed whatever the worker count. All geometry lives in
normalised coordinates (the crop spans ``[-1, 1]`` on both axes), so the same eraser renders
at 310 px or at 32 px for tests.

What is rendered:

* a rounded-square eraser (white, blue or pink; each colour reflects differently under the
  GRAY/AM/G/R/W illuminations) on a dark, textured conveyor belt, with position jitter, a
  small rotation and sometimes a neighbouring eraser intruding at the crop border;
* the dark "MILAN 430" logo printed diagonally across the top surface;
* NORMAL: a Lambertian shading of the height map lit from one side, so relief (edges,
  cracks, dents, residue) shows strongly there while ink is nearly invisible;
* print defects (missing ink, faded letter, smudge, double print, shifted print) and physical
  defects (crack, pressed residue, chipped corner, dent, non-square outline), each subtle or
  obvious;
* mild illumination gradients and sensor noise.

Layout written into ``out_dir``::

    arrays/<ID>.npy              uint8 (size, size, 6), channel order model.channels.CHANNELS
    labels_binary.csv            ID,error          (noisy labels, as delivered)
    labels_multiclass.csv        ID,label          (noisy labels, "X_Y")
    truth/clean_labels.csv       ID,label,print_kind,physical_kind,severity,flipped
    images/<ID>_<CH>.png         with png=True
    arrays.zip / images.zip      with zip_arrays / zip_images

``python make_synthetic.py OUT_DIR --n 1500`` writes a data set from the terminal.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import multiprocessing
import os
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from model.channels import CHANNELS, CLASS_CODES, NATIVE_SIZE
from model.fileio import atomic_write

logger = logging.getLogger(__name__)

PRINT_KINDS: tuple[str, ...] = ("missing", "faded", "smudge", "double", "shifted")
"""Print defect kinds (X = 1)."""

PHYSICAL_KINDS: tuple[str, ...] = ("crack", "residue", "chip", "dent", "non_square")
"""Physical defect kinds (Y = 1)."""

SEVERITIES: tuple[str, ...] = ("subtle", "obvious")

LOGO_TEXT = "MILAN 430"

# Reflectance per colour illumination (GRAY, AM, G, R, W). The colours differ per channel so
# that a model can tell them apart, and so that a blue eraser is dark under amber/red light.
_ERASER_COLOURS: dict[str, tuple[float, ...]] = {
    "white": (0.80, 0.84, 0.80, 0.86, 0.88),
    "blue": (0.40, 0.22, 0.44, 0.15, 0.48),
    "pink": (0.66, 0.76, 0.44, 0.84, 0.72),
}
_BELT = np.array([0.10, 0.11, 0.09, 0.12, 0.13], np.float32)
_INK = np.array([0.07, 0.05, 0.07, 0.05, 0.09], np.float32)  # blue-black
_DEBRIS = (  # pressed residue: grime, grey rubber, rust-brown
    (0.22, 0.20, 0.21, 0.24, 0.26),
    (0.48, 0.47, 0.48, 0.49, 0.52),
    (0.38, 0.48, 0.28, 0.52, 0.42),
)

# Heights are in normalised units (the crop is 2 wide); slopes are therefore size-free.
_ERASER_HEIGHT = 0.05
_BEVEL = 0.03  # width of the rounded top edge
_INK_HEIGHT = 0.00004  # a film of ink: next to no relief, hence nearly invisible in NORMAL
_LIGHT = np.array([-0.62, -0.36, 0.70], np.float32) / np.linalg.norm([-0.62, -0.36, 0.70])
_NORMAL_GAIN = 330.0  # DN per unit of shading change

_PLAN_STREAM = 0x5EED1AB  # extra seed word: the label plan never shares a stream with erasers
_POOL_MIN = 16  # below this many erasers a process pool costs more than it saves


class OutputExistsError(FileExistsError):
    """The output folder exists and is not empty (and ``force`` was not given)."""


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate` wrote. Class counts are of the true (clean) labels."""

    out_dir: Path
    n: int
    n_print: int
    n_physical: int
    n_both: int
    n_good: int
    n_flipped: int  # labels changed by injected noise
    seconds: float


@dataclass(frozen=True)
class EraserInfo:
    """Ground truth of one rendered eraser."""

    label: str  # clean "X_Y"
    print_kind: str  # "" when the print is fine
    physical_kind: str  # "" when the eraser is sound
    severity: str  # "subtle" | "obvious" | "" for a good eraser
    colour: str
    neighbour: bool


# --------------------------------------------------------------------------------------------
# Random choices (all in normalised coordinates, independent of the output size)
# --------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """Every random choice for one eraser; rendering it needs only this and the size."""

    noise_seed: int
    colour: str
    refl: np.ndarray  # (5,) eraser reflectance
    ink: np.ndarray  # (5,) ink reflectance
    half: float  # half side of the eraser
    radius: float  # corner radius
    centre: tuple[float, float]
    angle: float  # radians
    logo_centre: tuple[float, float]  # in eraser-local coordinates
    logo_angle: float  # radians, relative to the eraser
    logo_len: float
    neighbour: tuple[float, float, float, float, np.ndarray] | None  # cx, cy, half, angle, refl
    gain: np.ndarray  # (6,) exposure per channel
    grad: np.ndarray  # (6, 2) illumination gradient per channel
    print_kind: str = ""
    physical_kind: str = ""
    severity: str = ""
    pp: dict = field(default_factory=dict)  # print defect parameters
    php: dict = field(default_factory=dict)  # physical defect parameters


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _draw_scene(
    rng: np.random.Generator,
    label: str,
    print_kind: str | None,
    physical_kind: str | None,
    severity: str | None,
) -> _Scene:
    """Draw every random choice for one eraser with clean label ``label``."""
    # The draw order is fixed and does not depend on the label or on overrides, so the same
    # (seed, index) gives the same base eraser whatever its defects: tests compare a good
    # eraser with its defective twin, and a 1_1 eraser carries the 1_0 twin's print defect.
    noise_seed = int(rng.integers(2**63))
    colour = str(rng.choice(list(_ERASER_COLOURS)))
    refl = np.array(_ERASER_COLOURS[colour], np.float32) * rng.uniform(0.96, 1.04, 5)
    ink = _INK * rng.uniform(0.85, 1.15)
    half = _uniform(rng, 0.63, 0.69)
    radius = _uniform(rng, 0.08, 0.14)
    centre = (_uniform(rng, -0.06, 0.06), _uniform(rng, -0.06, 0.06))
    angle = float(np.deg2rad(rng.uniform(-7, 7)))
    logo_centre = (_uniform(rng, -0.03, 0.03), _uniform(rng, -0.03, 0.03))
    logo_angle = float(np.deg2rad(-45 + rng.uniform(-3, 3)))  # bottom-left to top-right
    logo_len = _uniform(rng, 1.25, 1.40)
    neighbour = None
    has_neighbour = rng.random() < 0.15
    side = int(rng.integers(4))
    intrude, lateral = rng.uniform(0.04, 0.18), rng.uniform(-0.5, 0.5)
    n_half = rng.uniform(0.63, 0.69)
    n_angle = float(np.deg2rad(rng.uniform(-7, 7)))
    n_refl = np.array(_ERASER_COLOURS[str(rng.choice(list(_ERASER_COLOURS)))], np.float32)
    if has_neighbour:
        along = 1.0 - intrude + n_half
        cx, cy = [(-along, lateral), (along, lateral), (lateral, -along), (lateral, along)][side]
        neighbour = (float(cx), float(cy), float(n_half), n_angle, n_refl)
    gain = rng.uniform(0.95, 1.05, 6).astype(np.float32)
    grad = rng.uniform(-0.06, 0.06, (6, 2)).astype(np.float32)

    drawn_severity = str(rng.choice(SEVERITIES))
    drawn_print = str(rng.choice(PRINT_KINDS))
    drawn_physical = str(rng.choice(PHYSICAL_KINDS))
    print_rng = np.random.default_rng(rng.integers(2**63))
    physical_rng = np.random.default_rng(rng.integers(2**63))

    scene = _Scene(
        noise_seed=noise_seed,
        colour=colour,
        refl=refl.astype(np.float32),
        ink=ink.astype(np.float32),
        half=half,
        radius=radius,
        centre=centre,
        angle=angle,
        logo_centre=logo_centre,
        logo_angle=logo_angle,
        logo_len=logo_len,
        neighbour=neighbour,
        gain=gain,
        grad=grad,
    )
    x_err, y_err = label[0] == "1", label[2] == "1"
    if x_err or y_err:
        scene.severity = severity or drawn_severity
    subtle = scene.severity == "subtle"
    if x_err:
        scene.print_kind = print_kind or drawn_print
        scene.pp = _draw_print(print_rng, scene.print_kind, subtle)
    if y_err:
        scene.physical_kind = physical_kind or drawn_physical
        scene.php = _draw_physical(physical_rng, scene.physical_kind, subtle, half)
    return scene


def _draw_print(rng: np.random.Generator, kind: str, subtle: bool) -> dict:
    """Parameters of a print defect; lengths are fractions of the logo's letter height."""
    letters = [i for i, ch in enumerate(LOGO_TEXT) if ch != " "]
    p: dict = {"letter": int(rng.choice(letters))}
    if kind == "missing":
        # subtle: a bite out of one letter; obvious: most of a letter (or two) gone
        p["u"], p["v"] = _uniform(rng, 0.2, 0.8), _uniform(rng, 0.25, 0.75)
        p["r"] = _uniform(rng, 0.22, 0.32) if subtle else _uniform(rng, 0.55, 0.9)
        p["two"] = (not subtle) and rng.random() < 0.4
    elif kind == "faded":
        p["factor"] = _uniform(rng, 0.45, 0.6) if subtle else _uniform(rng, 0.05, 0.25)
        p["count"] = 1 if subtle else int(rng.integers(1, 4))
    elif kind == "smudge":
        p["sigma"] = _uniform(rng, 0.06, 0.1) if subtle else _uniform(rng, 0.15, 0.3)
        p["reach"] = _uniform(rng, 0.6, 0.9) if subtle else _uniform(rng, 1.2, 2.2)
        p["dir"] = _uniform(rng, 0, 2 * np.pi)
    elif kind == "double":
        r = _uniform(rng, 0.08, 0.14) if subtle else _uniform(rng, 0.2, 0.4)
        phi = _uniform(rng, 0, 2 * np.pi)
        p["dx"], p["dy"] = r * np.cos(phi), r * np.sin(phi)
        p["alpha"] = _uniform(rng, 0.35, 0.55) if subtle else _uniform(rng, 0.6, 0.9)
    elif kind == "shifted":
        r = _uniform(rng, 0.11, 0.16) if subtle else _uniform(rng, 0.22, 0.34)
        phi = _uniform(rng, 0, 2 * np.pi)
        p["dx"], p["dy"] = r * np.cos(phi), r * np.sin(phi)
        turn = float(rng.choice([-1, 1]) * rng.uniform(8, 20))
        p["dangle"] = 0.0 if subtle else float(np.deg2rad(turn))
    else:
        raise ValueError(f"unknown print defect kind {kind!r}; known: {PRINT_KINDS}")
    return p


def _draw_physical(rng: np.random.Generator, kind: str, subtle: bool, half: float) -> dict:
    """Parameters of a physical defect in eraser-local normalised coordinates."""
    p: dict = {}
    if kind == "crack":
        # a persistent random walk that usually starts at an edge, where erasers crack
        length = _uniform(rng, 0.14, 0.24) if subtle else _uniform(rng, 0.35, 0.6)
        p["width"] = _uniform(rng, 0.004, 0.006) if subtle else _uniform(rng, 0.007, 0.011)
        p["depth"] = _uniform(rng, 0.003, 0.005) if subtle else _uniform(rng, 0.008, 0.014)
        p["ao"] = 0.06 if subtle else 0.18  # a groove darkens the colour captures only a bit
        paths = [_random_walk(rng, length, half)]
        if not subtle and rng.random() < 0.5:
            start = paths[0][int(rng.integers(1, len(paths[0])))]
            paths.append(_random_walk(rng, length * 0.5, half, start=start))
        p["paths"] = paths
    elif kind == "residue":
        r = _uniform(rng, 0.025, 0.04) if subtle else _uniform(rng, 0.05, 0.09)
        c = rng.uniform(-0.65 * half, 0.65 * half, 2)
        k = int(rng.integers(3, 7))  # a lumpy, irregular smear rather than a disc
        p["blobs"] = [(c + rng.normal(0, r * 1.1, 2), r * rng.uniform(0.4, 1.0)) for _ in range(k)]
        p["colour"] = np.array(_DEBRIS[int(rng.integers(len(_DEBRIS)))], np.float32)
        p["mix"] = _uniform(rng, 0.25, 0.4) if subtle else _uniform(rng, 0.75, 1.0)
        p["bump"] = _uniform(rng, 0.002, 0.004) if subtle else _uniform(rng, 0.006, 0.012)
    elif kind == "chip":
        p["corner"] = (int(rng.choice([-1, 1])), int(rng.choice([-1, 1])))
        depth = _uniform(rng, 0.06, 0.1) if subtle else _uniform(rng, 0.14, 0.24)
        p["da"], p["db"] = depth * rng.uniform(0.7, 1.3), depth * rng.uniform(0.7, 1.3)
        p["rough"] = [(_uniform(rng, 8, 30), _uniform(rng, 0, 2 * np.pi)) for _ in range(3)]
        p["rough_amp"] = depth * 0.1
    elif kind == "dent":
        p["centre"] = rng.uniform(-0.6 * half, 0.6 * half, 2)
        p["sigma"] = _uniform(rng, 0.04, 0.07) if subtle else _uniform(rng, 0.07, 0.12)
        p["depth"] = _uniform(rng, 0.003, 0.005) if subtle else _uniform(rng, 0.01, 0.018)
    elif kind == "non_square":
        p["mode"] = str(rng.choice(["trapezoid", "skew", "stretch"]))
        p["amount"] = float(rng.choice([-1, 1])) * (
            _uniform(rng, 0.05, 0.08) if subtle else _uniform(rng, 0.11, 0.18)
        )
        p["swap"] = bool(rng.random() < 0.5)  # deform along the other axis
    else:
        raise ValueError(f"unknown physical defect kind {kind!r}; known: {PHYSICAL_KINDS}")
    return p


def _random_walk(
    rng: np.random.Generator, length: float, half: float, start: np.ndarray | None = None
) -> np.ndarray:
    """Polyline (k, 2) of a crack in eraser-local coordinates."""
    if start is None:
        if rng.random() < 0.7:  # from an edge, heading inwards
            side = int(rng.integers(4))
            t = rng.uniform(-0.7 * half, 0.7 * half)
            inset = half * 0.97
            start = np.array([(-inset, t), (inset, t), (t, -inset), (t, inset)][side])
            heading = [0.0, np.pi, np.pi / 2, -np.pi / 2][side] + rng.normal(0, 0.4)
        else:
            start = rng.uniform(-0.6 * half, 0.6 * half, 2)
            heading = rng.uniform(0, 2 * np.pi)
    else:
        heading = rng.uniform(0, 2 * np.pi)
    step = 0.012
    n = max(2, int(length / step))
    headings = heading + np.cumsum(rng.normal(0, 0.35, n))
    steps = step * np.stack([np.cos(headings), np.sin(headings)], axis=1)
    pts = np.vstack([start, start + np.cumsum(steps, axis=0)])
    return np.clip(pts, -half, half)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y down)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))


@dataclass(frozen=True)
class _Logo:
    mask: np.ndarray  # float32 (h, w) in [0, 1], ink = 1
    text_w: float  # texture width of the text
    centre: tuple[float, float]  # texture (row, col) of the text centre
    letter_h: float  # texture height of a capital letter
    letters: tuple[tuple[float, float], ...]  # column span of each character


@functools.lru_cache(maxsize=1)
def _logo() -> _Logo:
    """The "MILAN 430" mask, rendered once at high resolution and cached per process."""
    font_px, stroke = 80, 2  # the stroke makes the type heavy, like the real print
    font = ImageFont.load_default(size=font_px)  # Pillow >= 10.1; bundled, no font files
    left, top, right, bottom = font.getbbox(LOGO_TEXT, stroke_width=stroke)
    pad = int(0.6 * (bottom - top)) + 4  # room for double prints and smudges
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    draw.text((pad - left, pad - top), LOGO_TEXT, fill=255, font=font, stroke_width=stroke)
    mask = np.asarray(img, np.float32) / 255.0
    x0 = float(pad)
    spans = []
    for i in range(len(LOGO_TEXT)):
        a, b = font.getlength(LOGO_TEXT[:i]), font.getlength(LOGO_TEXT[: i + 1])
        spans.append((x0 + a - stroke, x0 + b + stroke))
    mask.setflags(write=False)
    return _Logo(
        mask=mask,
        text_w=float(right - left),
        centre=(h / 2.0, w / 2.0),
        letter_h=float(bottom - top),
        letters=tuple(spans),
    )


def _print_texture(logo: _Logo, kind: str, p: dict) -> np.ndarray:
    """The logo mask with a print defect applied (in texture space, so it scales)."""
    tex = logo.mask.copy()
    if not kind or kind == "shifted":  # a shift moves the logo, not the ink
        return tex
    lh = logo.letter_h
    rows, cols = np.mgrid[0 : tex.shape[0], 0 : tex.shape[1]].astype(np.float32)
    top = logo.centre[0] - lh / 2

    def letter_weight(i: int) -> np.ndarray:
        a, b = logo.letters[i]
        return np.clip(np.minimum(cols - a, b - cols) / 2.0 + 0.5, 0, 1)

    if kind == "missing":
        chosen = [p["letter"]]
        if p["two"]:
            nxt = p["letter"] + 1 if p["letter"] + 1 < len(LOGO_TEXT) else p["letter"] - 1
            if LOGO_TEXT[nxt] != " ":
                chosen.append(nxt)
        for i in chosen:
            a, b = logo.letters[i]
            cu, cv = a + p["u"] * (b - a), top + p["v"] * lh
            d = np.hypot(cols - cu, rows - cv) - p["r"] * lh
            tex *= np.clip(d / 2.0 + 0.5, 0, 1)  # soft edge of the gap
    elif kind == "faded":
        w = np.zeros_like(tex)
        first = p["letter"]
        for i in range(first, min(first + p["count"], len(LOGO_TEXT))):
            w = np.maximum(w, letter_weight(i))
        tex *= 1 - w * (1 - p["factor"])
    elif kind == "smudge":
        a, b = logo.letters[p["letter"]]
        cu, cv = (a + b) / 2, logo.centre[0]
        reach = p["reach"] * lh
        region = np.exp(-((cols - cu) ** 2 + (rows - cv) ** 2) / (2 * reach**2))
        sigma = p["sigma"] * lh
        shift = (sigma * np.sin(p["dir"]), sigma * np.cos(p["dir"]))
        smear = ndimage.shift(ndimage.gaussian_filter(tex, sigma), shift, order=1)
        smeared = np.maximum(tex, np.clip(smear * 1.6, 0, 1))
        tex += region * (smeared - tex)
    elif kind == "double":
        dy, dx = round(p["dy"] * lh), round(p["dx"] * lh)
        # the padding around the text is wider than any offset, so rolling never wraps ink
        tex = np.maximum(tex, p["alpha"] * np.roll(tex, (dy, dx), axis=(0, 1)))
    return tex


def _to_local(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> coordinates of a frame at ``centre`` rotated by ``angle``."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    return c * dx + s * dy, -s * dx + c * dy


def _rounded_square_sdf(a: np.ndarray, b: np.ndarray, half: float, radius: float) -> np.ndarray:
    """Signed distance to a rounded square (negative inside)."""
    qa, qb = np.abs(a) - (half - radius), np.abs(b) - (half - radius)
    outside = np.hypot(np.maximum(qa, 0), np.maximum(qb, 0))
    return outside + np.minimum(np.maximum(qa, qb), 0) - radius


def _eraser_sdf(a: np.ndarray, b: np.ndarray, sc: _Scene) -> np.ndarray:
    """Outline of the eraser, including outline defects (non-square, chipped corner)."""
    php = sc.php
    if sc.physical_kind == "non_square":
        u, v = (b, a) if php["swap"] else (a, b)
        t = php["amount"]
        if php["mode"] == "trapezoid":
            u = u / (1 + t * v / sc.half)
        elif php["mode"] == "skew":
            u = u - t * v
        else:  # stretch: a rectangle instead of a square
            u, v = u / (1 + t / 2), v / (1 - t / 2)
        a, b = (v, u) if php["swap"] else (u, v)
    sdf = _rounded_square_sdf(a, b, sc.half, sc.radius)
    if sc.physical_kind == "chip":
        sa, sb = php["corner"]
        # the cut runs from (corner - da along a) to (corner - db along b); the signed
        # distance to it is positive on the corner's side, where the eraser is removed
        # (depths count from the rounded corner: 0.6 r more, or a small chip would miss it)
        ca, cb = sa * sc.half, sb * sc.half
        da, db = php["da"] + 0.6 * sc.radius, php["db"] + 0.6 * sc.radius
        na, nb = sa * db, sb * da  # normal of the cut, pointing to the corner
        norm = float(np.hypot(na, nb))
        dist = ((a - (ca - sa * da)) * na + (b - cb) * nb) / norm
        along = (a * nb - b * na) / norm
        for freq, phase in php["rough"]:  # a broken edge is jagged, not straight
            dist = dist + php["rough_amp"] * np.sin(freq * along + phase)
        sdf = np.maximum(sdf, dist)
    return sdf


def _smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth S in between."""
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def _crack_profile(x: np.ndarray, y: np.ndarray, sc: _Scene, px: float) -> np.ndarray:
    """Groove profile in [0, 1] of the crack polylines, computed only around the crack."""
    php = sc.php
    size = x.shape[0]
    out = np.zeros((size, size), np.float32)
    # below one pixel a groove would fall between pixel centres: keep it at least ~a pixel wide
    width = max(php["width"], 0.6 * px)
    c, s = np.cos(sc.angle), np.sin(sc.angle)
    for path in php["paths"]:
        pts = np.stack(
            [
                c * path[:, 0] - s * path[:, 1] + sc.centre[0],
                s * path[:, 0] + c * path[:, 1] + sc.centre[1],
            ],
            axis=1,
        ).astype(np.float32)
        lo = np.floor((pts.min(0) - 3 * width + 1) / px).astype(int)
        hi = np.ceil((pts.max(0) + 3 * width + 1) / px).astype(int)
        c0, r0 = np.clip(lo, 0, size)
        c1, r1 = np.clip(hi, 0, size)
        if c1 <= c0 or r1 <= r0:
            continue
        p = np.stack([x[r0:r1, c0:c1].ravel(), y[r0:r1, c0:c1].ravel()], axis=1)
        a, ab = pts[:-1], pts[1:] - pts[:-1]
        t = np.einsum("pmk,mk->pm", p[:, None, :] - a[None], ab) / np.maximum(
            np.einsum("mk,mk->m", ab, ab), 1e-12
        )
        t = np.clip(t, 0, 1)
        d2 = ((p[:, None, :] - (a[None] + t[..., None] * ab[None])) ** 2).sum(-1).min(1)
        prof = np.exp(-d2 / width**2).reshape(r1 - r0, c1 - c0)
        out[r0:r1, c0:c1] = np.maximum(out[r0:r1, c0:c1], prof)
    return out


def _sensor_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean triangular noise with standard deviation ``sigma``.

    The sum of two uniform bytes; drawing normals would cost a fifth of the whole render.
    """
    u = np.frombuffer(rng.bytes(2 * int(np.prod(shape))), np.uint8).reshape(2, *shape)
    return (u[0].astype(np.float32) + u[1] - np.float32(255.0)) * np.float32(sigma / 104.5)


class _Layers:
    """Reflectance as a weighted sum of materials, blended back to front.

    Each "over" blend scales the weights below it, which costs single-channel operations; the
    five colour channels are only formed at the end with one small matrix product.
    """

    def __init__(self, weight: np.ndarray, colour: np.ndarray) -> None:
        self.weights = [weight]
        self.colours = [colour]

    def over(self, alpha: np.ndarray, colour: np.ndarray, tint: np.ndarray | None = None) -> None:
        keep = 1 - alpha
        self.weights = [w * keep for w in self.weights]
        self.weights.append(alpha if tint is None else alpha * tint)
        self.colours.append(colour)

    def reflectance(self, scale: np.ndarray, spatial: np.ndarray) -> np.ndarray:
        """``(5, H, W)`` reflectance times ``scale[c]`` per channel and ``spatial`` per pixel."""
        c = (np.stack(self.colours, axis=1) * scale[:, None]).astype(np.float32)  # (5, k)
        w = [wk * spatial for wk in self.weights]
        out = np.empty((5, *spatial.shape), np.float32)
        # An explicit loop rather than a BLAS product: BLAS threads would fight the worker
        # processes for the cores, and (5 x k) @ (k x H*W) gains nothing from them.
        for ch in range(5):
            np.multiply(w[0], c[ch, 0], out=out[ch])
            for k in range(1, len(w)):
                out[ch] += w[k] * c[ch, k]
        return out


# One pass over the six illuminations (about 100 lines): each channel's formula sits next to
# the others so that their differences (what NORMAL shows and the colours do not) stay visible.
def _render(sc: _Scene, size: int, logo: bool = True) -> np.ndarray:
    """Render a scene into a ``(size, size, 6)`` uint8 array."""
    rng = np.random.default_rng(sc.noise_seed)
    x, y = _grid(size)
    px = 2.0 / size
    f32 = np.float32

    # Geometry: eraser, optional neighbour, coverage (anti-aliased) and height map.
    a, b = _to_local(x, y, sc.centre, sc.angle)
    sdf = _eraser_sdf(a, b, sc)
    cov = np.clip(f32(0.5) - sdf * f32(1 / px), 0, 1)
    height = f32(_ERASER_HEIGHT) * _smoothstep(sdf * f32(-1 / _BEVEL))
    cov_n = None
    if sc.neighbour is not None:
        ncx, ncy, nh, nang, _ = sc.neighbour
        na, nb = _to_local(x, y, (ncx, ncy), nang)
        nsdf = _rounded_square_sdf(na, nb, nh, sc.radius)
        cov_n = np.clip(f32(0.5) - nsdf * f32(1 / px), 0, 1) * (1 - cov)
        height = np.maximum(height, f32(_ERASER_HEIGHT) * _smoothstep(nsdf * f32(-1 / _BEVEL)))

    # Belt texture: fine grain plus streaks along the running direction. Filtered uniform
    # noise is Gaussian enough and much cheaper to draw than normals.
    sig = max(0.6, 0.004 * size)
    grain = ndimage.gaussian_filter(rng.random((size, size), f32) - f32(0.5), sig, truncate=3)
    grain *= f32(1 / (grain.std() + 1e-6))
    # two box passes along x approximate a long Gaussian at a fraction of the cost
    box = max(1, int(10 * sig))
    streak = rng.random((size, size), f32) - f32(0.5)
    for _ in range(2):
        streak = ndimage.uniform_filter1d(streak, box, axis=1)
    streak = ndimage.gaussian_filter1d(streak, max(0.6, 0.003 * size), axis=0, truncate=3)
    streak *= f32(1 / (streak.std() + 1e-6))
    height += f32(0.0003) * grain * (1 - cov)

    layers = _Layers(1 + f32(0.12) * streak + f32(0.06) * grain, _BELT)
    if cov_n is not None:
        layers.over(cov_n, sc.neighbour[4])
    layers.over(cov, sc.refl, tint=1 + f32(0.015) * grain)  # faint mottling of the rubber

    # Physical defects that are not part of the outline.
    ao = None
    residue = None
    kind, php = sc.physical_kind, sc.php
    if kind == "crack":
        groove = _crack_profile(x, y, sc, px) * cov
        height -= f32(php["depth"]) * groove
        ao = f32(php["ao"]) * groove
    elif kind == "dent":
        dcx, dcy = php["centre"]
        r2 = (a - f32(dcx)) ** 2 + (b - f32(dcy)) ** 2
        height -= f32(php["depth"]) * np.exp(r2 * f32(-0.5 / php["sigma"] ** 2)) * cov
    elif kind == "residue":
        field_ = np.zeros_like(cov)
        for (bcx, bcy), r in php["blobs"]:
            field_ += np.exp(((a - f32(bcx)) ** 2 + (b - f32(bcy)) ** 2) * f32(-0.5 / r**2))
        # about a pixel of anti-aliasing: near its edge a blob's field changes by ~0.6 px / r
        # per pixel (capped below 1 so that the field's far tail stays exactly zero)
        soft = min(0.9, max(0.05, 0.6 * px / min(r for _, r in php["blobs"])))
        residue = np.clip((field_ - f32(0.5)) * f32(1 / soft) + f32(0.5), 0, 1) * cov
        height += f32(php["bump"]) * _smoothstep((field_ - f32(0.3)) * f32(2)) * cov
        layers.over(f32(php["mix"]) * residue, php["colour"])

    # Ink: the (possibly defective) logo texture, warped onto the eraser's top.
    ink = None
    if logo:
        ink = _sample_logo(a, b, sc, size) * cov
        if residue is not None:  # residue pressed on top hides the print
            ink *= 1 - residue
        layers.over(ink, sc.ink)
        height += f32(_INK_HEIGHT) * ink

    # Surface normals from the height map (slopes are in normalised units).
    gy, gx = np.gradient(height, px)
    inv = 1 / np.sqrt(1 + gx * gx + gy * gy)
    shade = (gx * f32(-_LIGHT[0]) + gy * f32(-_LIGHT[1]) + f32(_LIGHT[2])) * inv

    # Colour captures: diffuse light from above, so tilted faces darken only a little; mild
    # per-channel illumination gradients and vignetting; sensor noise.
    spatial = f32(255) * (f32(0.8) + f32(0.2) * inv) * (1 - f32(0.04) * (x * x + y * y))
    if ao is not None:
        spatial *= 1 - ao
    colour = layers.reflectance(sc.gain[:5], spatial)
    colour *= 1 + sc.grad[:5, 0, None, None] * x + sc.grad[:5, 1, None, None] * y
    colour += _sensor_noise(rng, colour.shape, 1.8) + f32(0.5)  # +0.5: round on the cast

    # NORMAL: relief shading, flat = mid-grey; ink barely shows (a trace of albedo leakage).
    normal = f32(128) + f32(_NORMAL_GAIN) * (shade - f32(_LIGHT[2]))
    if ink is not None:
        normal *= 1 - f32(0.02) * ink
    normal = normal * sc.gain[5] + f32(64) * (sc.grad[5, 0] * x + sc.grad[5, 1] * y)
    normal += _sensor_noise(rng, normal.shape, 2.0) + f32(0.5)

    out = np.empty((size, size, len(CHANNELS)), np.uint8)
    out[..., :5] = np.clip(colour, 0, 255, out=colour).transpose(1, 2, 0)
    out[..., 5] = np.clip(normal, 0, 255, out=normal)
    return out


@functools.lru_cache(maxsize=8)
def _clean_texture(size: int) -> np.ndarray:
    """The defect-free logo mask, pre-filtered for ``size`` (most erasers use this one)."""
    nominal_len = 1.325  # middle of the drawn logo lengths; the blur need not be exact
    return _prefilter(_logo().mask, _logo().text_w / nominal_len * 2.0 / size)


def _prefilter(tex: np.ndarray, ratio: float) -> np.ndarray:
    """Blur a texture sampled at ``ratio`` texels per pixel, so small renders do not alias."""
    if ratio <= 1.2:
        return tex
    return ndimage.gaussian_filter(tex, 0.45 * ratio, truncate=2.5)


def _sample_logo(a: np.ndarray, b: np.ndarray, sc: _Scene, size: int) -> np.ndarray:
    """Ink coverage in [0, 1] at each pixel from the cached logo mask, warped per eraser."""
    logo = _logo()
    pp = sc.pp
    lcx, lcy = sc.logo_centre
    angle = sc.logo_angle
    if sc.print_kind == "shifted":
        lcx, lcy, angle = lcx + pp["dx"], lcy + pp["dy"], angle + pp["dangle"]
    u, v = _to_local(a, b, (lcx, lcy), angle)
    k = logo.text_w / sc.logo_len  # texture pixels per normalised unit
    if sc.print_kind in ("", "shifted"):
        tex = _clean_texture(size)
    else:
        tex = _prefilter(_print_texture(logo, sc.print_kind, pp), k * 2.0 / size)
    # Only pixels over the texture are sampled: the logo is a narrow diagonal band.
    half_h, half_w = (s / (2 * k) for s in tex.shape)
    inside = np.flatnonzero((np.abs(u) < half_w) & (np.abs(v) < half_h))
    ink = np.zeros(u.size, np.float32)
    rows = logo.centre[0] + v.ravel()[inside] * np.float32(k)
    cols = logo.centre[1] + u.ravel()[inside] * np.float32(k)
    ink[inside] = ndimage.map_coordinates(tex, [rows, cols], order=1, mode="constant", cval=0.0)
    return ink.reshape(u.shape)


def render_eraser(
    seed: int,
    index: int,
    label: str = "0_0",
    size: int = NATIVE_SIZE,
    *,
    print_kind: str | None = None,
    physical_kind: str | None = None,
    severity: str | None = None,
    logo: bool = True,
) -> tuple[np.ndarray, EraserInfo]:
    """Render eraser ``index`` of data set ``seed`` with clean label ``label``.

    Returns the ``(size, size, 6)`` uint8 array and its ground truth. Defect kinds and
    severity are drawn from the eraser's own RNG unless given. The base eraser (colour, pose,
    lighting, sensor noise) depends only on ``(seed, index)``, so renders that differ only in
    label, kinds or ``logo`` differ only by that defect or by the ink: tests rely on this.
    """
    if label not in CLASS_CODES:
        raise ValueError(f"unknown label {label!r}; known: {CLASS_CODES}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; known: {SEVERITIES}")
    rng = np.random.default_rng([seed, index])
    sc = _draw_scene(rng, label, print_kind, physical_kind, severity)
    info = EraserInfo(
        label, sc.print_kind, sc.physical_kind, sc.severity, sc.colour, sc.neighbour is not None
    )
    return _render(sc, size, logo), info


# --------------------------------------------------------------------------------------------
# Data set generation
# --------------------------------------------------------------------------------------------


def make_ids(n: int, id_format: str = "E{i:05d}", pack_size: int = 8) -> list[str]:
    """IDs from ``id_format`` with fields ``i``, ``pack`` (= i // pack_size), ``k``.

    Raises ``ValueError`` for a bad format, duplicate IDs or IDs unsafe as file names.
    """
    try:
        ids = [id_format.format(i=i, pack=i // pack_size, k=i % pack_size) for i in range(n)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(
            f"bad --id-format {id_format!r} ({exc}); use the fields {{i}}, {{pack}}, {{k}}, "
            'e.g. "E{i:05d}" or "P{pack:04d}_E{k:02d}"'
        ) from None
    bad = [s for s in ids if not s or s.startswith(".") or any(c in s for c in '/\\,"\n\r\t')]
    if bad:
        raise ValueError(f"--id-format {id_format!r} gives unusable ID {bad[0]!r}")
    if len(set(ids)) != n:
        raise ValueError(
            f"--id-format {id_format!r} gives duplicate IDs; include {{i}} or {{pack}} and {{k}}"
        )
    return ids


def plan_labels(
    n: int, seed: int, defect_rate: float = 0.35, noise: float = 0.0, fp_noise: float = 0.0
) -> tuple[list[str], list[str]]:
    """Clean and noisy ``X_Y`` labels for ``n`` erasers.

    Exact class counts (45 % print-only, 45 % physical-only, 10 % both among the defective),
    shuffled deterministically. ``round(noise * n_defective)`` defective erasers are labelled
    ``0_0`` and ``round(fp_noise * n_good)`` good ones ``1_0`` or ``0_1``.
    """
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_def = round(defect_rate * n)
    n_both = round(0.10 * n_def)
    if n_def >= 3:  # small sets still get every class
        n_both = max(1, n_both)
    n_print = (n_def - n_both + 1) // 2
    n_phys = n_def - n_both - n_print
    counts = {"1_0": n_print, "0_1": n_phys, "1_1": n_both, "0_0": n - n_def}
    clean = np.repeat(list(counts), list(counts.values()))[rng.permutation(n)]
    noisy = clean.copy()
    defective = np.flatnonzero(clean != "0_0")
    good = np.flatnonzero(clean == "0_0")
    missed = rng.choice(defective, round(noise * len(defective)), replace=False)
    false_pos = rng.choice(good, round(fp_noise * len(good)), replace=False)
    noisy[missed] = "0_0"
    noisy[false_pos] = rng.choice(["1_0", "0_1"], len(false_pos))
    return clean.tolist(), noisy.tolist()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _png_bytes(plane: np.ndarray) -> bytes:
    # level 1: noisy captures hardly compress better at higher levels, which cost 1.5-3x
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(plane)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass(frozen=True)
class _Job:
    seed: int
    size: int
    out_dir: str
    png: bool  # write images/<ID>_<CH>.png
    png_bytes: bool  # return the PNG bytes (for images.zip)
    subtle_rate: float | None = None  # share of subtle defects; None: the scene's own draw


def _work(job: _Job, task: tuple[int, str, str]) -> tuple[EraserInfo, list[bytes] | None]:
    """Render one eraser and write its files (runs in a worker process)."""
    index, eid, label = task
    severity = None
    if job.subtle_rate is not None:
        # its own stream, so the base eraser stays the same whatever the rate
        subtle = np.random.default_rng([job.seed, index, 1]).random() < job.subtle_rate
        severity = "subtle" if subtle else "obvious"
    arr, info = render_eraser(job.seed, index, label, job.size, severity=severity)
    data = _npy_bytes(arr)
    with open(os.path.join(job.out_dir, "arrays", f"{eid}.npy"), "wb") as fh:
        fh.write(data)
    pngs = None
    if job.png or job.png_bytes:
        pngs = [_png_bytes(arr[..., c]) for c in range(len(CHANNELS))]
        if job.png:
            for ch, blob in zip(CHANNELS, pngs, strict=True):
                with open(os.path.join(job.out_dir, "images", f"{eid}_{ch}.png"), "wb") as fh:
                    fh.write(blob)
    return info, (pngs if job.png_bytes else None)


def _start_method() -> str:
    """``fork`` where available: a spawned worker re-imports the ``data`` package (and with it
    torch and kornia, seconds per worker), while the workers only need numpy, scipy and PIL,
    which are safe in a forked child even when the parent has started threads."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _run_jobs(
    job: _Job, tasks: list[tuple[int, str, str]], workers: int
) -> Iterator[tuple[EraserInfo, list[bytes] | None]]:
    """Results in task order, from a process pool when that pays off."""
    fn = functools.partial(_work, job)
    if workers <= 1 or len(tasks) < _POOL_MIN:
        yield from map(fn, tasks)
        return
    ctx = multiprocessing.get_context(_start_method())
    chunk = max(1, len(tasks) // (workers * 32))  # small chunks: no straggler at the end
    with ctx.Pool(min(workers, len(tasks))) as pool:
        yield from pool.imap(fn, tasks, chunksize=chunk)


# Everything generate() may have written; --force removes exactly these before regenerating.
_CSV_NAMES = ("labels_binary.csv", "labels_multiclass.csv")
TRUTH_CSV = Path("truth") / "clean_labels.csv"


def _remove_previous(out: Path) -> None:
    # CSVs first: from here on the folder no longer looks like a complete data set
    for name in (*_CSV_NAMES, str(TRUTH_CSV), "arrays.zip", "images.zip"):
        (out / name).unlink(missing_ok=True)
        (out / f"{name}.tmp").unlink(missing_ok=True)
    for folder, pattern in (("arrays", "*.npy"), ("images", "*.png")):
        if (out / folder).is_dir():
            for f in (out / folder).glob(pattern):
                f.unlink()


def _zip_add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    """Add a member with a fixed timestamp, so a seed gives byte-identical zips too."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zf.compression
    info.external_attr = 0o644 << 16
    zf.writestr(info, data, compresslevel=zf.compresslevel)


def _write_csv(path: Path, header: list[str], rows: list[list[str | int]]) -> None:
    """Write via a temporary file so a reader never sees half a CSV."""
    with atomic_write(path, newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def _check_args(n: int, size: int, rates: dict[str, float], pack_size: int, workers: int | None):
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    if not 16 <= size <= 4096:
        raise ValueError(f"--size must be between 16 and 4096 pixels, got {size}")
    for name, value in rates.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--{name} must be between 0 and 1, got {value}")
    if pack_size < 1:
        raise ValueError(f"--pack-size must be at least 1, got {pack_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")


# Long (about 120 lines) because it is the one place that checks the arguments, plans the
# labels, renders in parallel and writes the files in the order that keeps an interrupted run
# from looking complete (labels last); each step is a call to a helper above.
def generate(
    out_dir: str | Path,
    n: int = 200,
    seed: int = 0,
    *,
    size: int = NATIVE_SIZE,
    defect_rate: float = 0.35,
    noise: float = 0.0,
    fp_noise: float = 0.0,
    png: bool = False,
    zip_arrays: bool = False,
    zip_images: bool = False,
    id_format: str = "E{i:05d}",
    pack_size: int = 8,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    force: bool = False,
    subtle_rate: float | None = None,
) -> SynthSummary:
    """Write a synthetic data set of ``n`` erasers into ``out_dir`` (see the module docstring).

    Raises ``ValueError`` for bad arguments and :class:`OutputExistsError` if ``out_dir`` is
    not empty and ``force`` is false; nothing is written in either case. ``subtle_rate`` sets
    the share of subtle defects (default: about half, drawn per eraser). ``progress`` is
    called with the number of erasers done so far. The label CSVs are written last, so an
    interrupted run never looks like a complete data set.
    """
    t0 = time.perf_counter()
    _check_args(
        n,
        size,
        {"defect-rate": defect_rate, "noise": noise, "fp-noise": fp_noise,
         "subtle-rate": 0.5 if subtle_rate is None else subtle_rate},
        pack_size,
        workers,
    )
    ids = make_ids(n, id_format, pack_size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder; choose another OUT_DIR")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(
                f"{out} exists and is not empty; choose a new folder, or pass --force to "
                "overwrite the generated files in it"
            )
        logger.info("overwriting the generated files in %s", out)
        _remove_previous(out)

    clean, noisy = plan_labels(n, seed, defect_rate, noise, fp_noise)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    if png:
        (out / "images").mkdir(exist_ok=True)
    workers = workers or os.cpu_count() or 1
    job = _Job(seed, size, str(out), png, zip_images, subtle_rate)
    tasks = list(zip(range(n), ids, clean, strict=True))
    logger.info("rendering %d erasers of %d px into %s (%d workers)", n, size, out, workers)

    # Zips are built next to their final name and renamed when complete.
    zips: dict[str, zipfile.ZipFile] = {}
    if zip_arrays:  # .npy of noisy images barely compresses; level 1 keeps it quick
        zips["arrays"] = zipfile.ZipFile(
            out / "arrays.zip.tmp", "w", zipfile.ZIP_DEFLATED, compresslevel=1
        )
    if zip_images:  # PNGs are already compressed
        zips["images"] = zipfile.ZipFile(out / "images.zip.tmp", "w", zipfile.ZIP_STORED)
    infos: list[EraserInfo] = []
    try:
        for done, (info, pngs) in enumerate(_run_jobs(job, tasks, workers), start=1):
            eid = ids[done - 1]
            infos.append(info)
            if "arrays" in zips:
                data = (out / "arrays" / f"{eid}.npy").read_bytes()
                _zip_add(zips["arrays"], f"arrays/{eid}.npy", data)
            if pngs is not None:
                for ch, blob in zip(CHANNELS, pngs, strict=True):
                    _zip_add(zips["images"], f"images/{eid}_{ch}.png", blob)
            if progress is not None:
                progress(done)
    except BaseException:
        # An interrupted run leaves the arrays written so far but no zip and no CSV, so it
        # cannot be mistaken for a complete data set.
        for name, zf in zips.items():
            zf.close()
            (out / f"{name}.zip.tmp").unlink(missing_ok=True)
        raise
    for zf in zips.values():
        zf.close()
    for name in zips:
        os.replace(out / f"{name}.zip.tmp", out / f"{name}.zip")

    flipped = [int(c != y) for c, y in zip(clean, noisy, strict=True)]
    (out / "truth").mkdir(exist_ok=True)
    _write_csv(
        out / TRUTH_CSV,
        ["ID", "label", "print_kind", "physical_kind", "severity", "flipped"],
        [
            [eid, info.label, info.print_kind, info.physical_kind, info.severity, f]
            for eid, info, f in zip(ids, infos, flipped, strict=True)
        ],
    )
    _write_csv(
        out / "labels_multiclass.csv",
        ["ID", "label"],
        [[eid, y] for eid, y in zip(ids, noisy, strict=True)],
    )
    _write_csv(
        out / "labels_binary.csv",
        ["ID", "error"],
        [[eid, int(y != "0_0")] for eid, y in zip(ids, noisy, strict=True)],
    )

    summary = SynthSummary(
        out_dir=out,
        n=n,
        n_print=clean.count("1_0"),
        n_physical=clean.count("0_1"),
        n_both=clean.count("1_1"),
        n_good=clean.count("0_0"),
        n_flipped=sum(flipped),
        seconds=time.perf_counter() - t0,
    )
    logger.info("wrote %d erasers to %s in %.1f s", n, out, summary.seconds)
    return summary
