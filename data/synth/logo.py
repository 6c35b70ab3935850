"""The printed logo: its ink mask (one or more lines of text), pre-filtered textures and the
warp that samples it onto an eraser's top."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from .geometry import to_local

LINE_GAP = 0.35  # between printed lines, in letter heights


@dataclass(frozen=True)
class Logo:
    mask: np.ndarray  # float32 (h, w) in [0, 1], ink = 1
    text_w: float  # texture width of the widest line
    centre: tuple[float, float]  # texture (row, col) of the text block's centre
    letter_h: float  # texture height of a capital letter
    chars: str  # every printed character, line after line (spaces kept, no line breaks)
    boxes: tuple[tuple[float, float, float, float], ...]  # (col0, col1, row0, row1) per char
    lines: int

    def letter_indices(self) -> list[int]:
        """Indices into :attr:`chars` of the characters that carry ink (not spaces)."""
        return [i for i, ch in enumerate(self.chars) if ch != " "]

    def same_line(self, i: int, j: int) -> bool:
        return self.boxes[i][2] == self.boxes[j][2]


@functools.lru_cache(maxsize=8)
def logo(text: tuple[str, ...]) -> Logo:
    """The mask of ``text`` (one string per line), rendered once at high resolution and
    cached per process; lines are centred under each other."""
    font_px, stroke = 80, 2  # the stroke makes the type heavy, like the real print
    font = ImageFont.load_default(size=font_px)  # Pillow >= 10.1; bundled, no font files
    bboxes = [font.getbbox(line, stroke_width=stroke) for line in text]
    letter_h = max(b[3] - b[1] for b in bboxes)
    widths = [b[2] - b[0] for b in bboxes]
    text_w = max(widths)
    gap = round(LINE_GAP * letter_h)
    pad = int(0.6 * letter_h) + 4  # room for double prints and smudges
    w = text_w + 2 * pad
    h = len(text) * letter_h + (len(text) - 1) * gap + 2 * pad
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    chars, boxes = [], []
    for i, (line, (left, top, _, _)) in enumerate(zip(text, bboxes, strict=True)):
        x0 = pad + (text_w - widths[i]) // 2  # whole pixels: the single line sits at pad
        row0 = pad + i * (letter_h + gap)
        draw.text((x0 - left, row0 - top), line, fill=255, font=font, stroke_width=stroke)
        for k, ch in enumerate(line):
            a, b = font.getlength(line[:k]), font.getlength(line[: k + 1])
            chars.append(ch)
            boxes.append((float(x0) + a - stroke, float(x0) + b + stroke, float(row0),
                          float(row0 + letter_h)))
    mask = np.asarray(img, np.float32) / 255.0
    mask.setflags(write=False)
    return Logo(mask=mask, text_w=float(text_w), centre=(h / 2.0, w / 2.0),
                letter_h=float(letter_h), chars="".join(chars), boxes=tuple(boxes),
                lines=len(text))


@functools.lru_cache(maxsize=16)
def clean_texture(text: tuple[str, ...], nominal_length: float, size: int) -> np.ndarray:
    """The defect-free mask, pre-filtered for ``size`` px at the style's middle logo width
    (most erasers use this one; the blur need not be exact)."""
    mask = logo(text)
    return prefilter(mask.mask, mask.text_w / nominal_length * 2.0 / size)


def prefilter(tex: np.ndarray, ratio: float) -> np.ndarray:
    """Blur a texture sampled at ``ratio`` texels per pixel, so small renders do not alias."""
    if ratio <= 1.2:
        return tex
    return ndimage.gaussian_filter(tex, 0.45 * ratio, truncate=2.5)


def sample(tex: np.ndarray, mask: Logo, a: np.ndarray, b: np.ndarray,
           centre: tuple[float, float], angle: float, length: float) -> np.ndarray:
    """Ink coverage in [0, 1] at each pixel: texture ``tex`` (of ``mask``'s layout) placed
    at ``centre`` and ``angle`` in eraser coordinates ``(a, b)``, ``length`` wide."""
    u, v = to_local(a, b, centre, angle)
    k = mask.text_w / length  # texture pixels per normalised unit
    # Only pixels over the texture are sampled: the logo is a narrow band.
    half_h, half_w = (s / (2 * k) for s in tex.shape)
    inside = np.flatnonzero((np.abs(u) < half_w) & (np.abs(v) < half_h))
    ink = np.zeros(u.size, np.float32)
    rows = mask.centre[0] + v.ravel()[inside] * np.float32(k)
    cols = mask.centre[1] + u.ravel()[inside] * np.float32(k)
    ink[inside] = ndimage.map_coordinates(tex, [rows, cols], order=1, mode="constant", cval=0.0)
    return ink.reshape(u.shape)
