"""Print defects (X = 1): what goes wrong with the ink, drawn per eraser and applied to the
logo's texture (so a defect scales with the logo)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .geometry import uniform
from .logo import Logo

PRINT_KINDS: tuple[str, ...] = ("missing", "faded", "smudge", "double", "shifted")
"""Print defect kinds (X = 1)."""


def draw_print(rng: np.random.Generator, kind: str, subtle: bool, mask: Logo,
               scale: float = 1.0) -> dict:
    """Parameters of a print defect; lengths are fractions of the logo's letter height,
    times ``scale`` (below 1: subtler defects than the default)."""
    p: dict = {"letter": int(rng.choice(mask.letter_indices()))}
    if kind == "missing":
        # subtle: a bite out of one letter; obvious: most of a letter (or two) gone
        p["u"], p["v"] = uniform(rng, 0.2, 0.8), uniform(rng, 0.25, 0.75)
        p["r"] = (uniform(rng, 0.22, 0.32) if subtle else uniform(rng, 0.55, 0.9)) * scale
        p["two"] = (not subtle) and rng.random() < 0.4
    elif kind == "faded":
        factor = uniform(rng, 0.45, 0.6) if subtle else uniform(rng, 0.05, 0.25)
        # less ink lost when smaller (at scale 1 the very draw: same seed, same bytes)
        p["factor"] = factor if scale == 1 else 1 - (1 - factor) * scale
        p["count"] = 1 if subtle else int(rng.integers(1, 4))
    elif kind == "smudge":
        p["sigma"] = (uniform(rng, 0.06, 0.1) if subtle else uniform(rng, 0.15, 0.3)) * scale
        p["reach"] = (uniform(rng, 0.6, 0.9) if subtle else uniform(rng, 1.2, 2.2)) * scale
        p["dir"] = uniform(rng, 0, 2 * np.pi)
    elif kind == "double":
        r = (uniform(rng, 0.08, 0.14) if subtle else uniform(rng, 0.2, 0.4)) * scale
        phi = uniform(rng, 0, 2 * np.pi)
        p["dx"], p["dy"] = r * np.cos(phi), r * np.sin(phi)
        p["alpha"] = uniform(rng, 0.35, 0.55) if subtle else uniform(rng, 0.6, 0.9)
    elif kind == "shifted":
        r = (uniform(rng, 0.11, 0.16) if subtle else uniform(rng, 0.22, 0.34)) * scale
        phi = uniform(rng, 0, 2 * np.pi)
        p["dx"], p["dy"] = r * np.cos(phi), r * np.sin(phi)
        turn = float(rng.choice([-1, 1]) * rng.uniform(8, 20))
        p["dangle"] = 0.0 if subtle else float(np.deg2rad(turn * scale))
    else:
        raise ValueError(f"unknown print defect kind {kind!r}; known: {PRINT_KINDS}")
    return p


def print_texture(mask: Logo, kind: str, p: dict) -> np.ndarray:
    """The logo mask with a print defect applied (in texture space, so it scales)."""
    tex = mask.mask.copy()
    if not kind or kind == "shifted":  # a shift moves the logo, not the ink
        return tex
    lh = mask.letter_h
    rows, cols = np.mgrid[0 : tex.shape[0], 0 : tex.shape[1]].astype(np.float32)

    def letter_weight(i: int) -> np.ndarray:
        a, b, top, bottom = mask.boxes[i]
        w = np.clip(np.minimum(cols - a, b - cols) / 2.0 + 0.5, 0, 1)
        if mask.lines > 1:  # the column band of one letter must spare the other lines
            inside = np.minimum(rows - top, bottom - rows) + 0.3 * lh  # ink overhangs a bit
            w = w * np.clip(inside / 2.0 + 0.5, 0, 1)
        return w

    if kind == "missing":
        chosen = [p["letter"]]
        if p["two"]:
            last = len(mask.chars) - 1
            nxt = p["letter"] + 1 if p["letter"] < last else p["letter"] - 1
            if mask.chars[nxt] != " " and mask.same_line(nxt, p["letter"]):
                chosen.append(nxt)
        for i in chosen:
            a, b, top, _ = mask.boxes[i]
            cu, cv = a + p["u"] * (b - a), top + p["v"] * lh
            d = np.hypot(cols - cu, rows - cv) - p["r"] * lh
            tex *= np.clip(d / 2.0 + 0.5, 0, 1)  # soft edge of the gap
    elif kind == "faded":
        w = np.zeros_like(tex)
        first = p["letter"]
        for i in range(first, min(first + p["count"], len(mask.chars))):
            if mask.same_line(i, first):
                w = np.maximum(w, letter_weight(i))
        tex *= 1 - w * (1 - p["factor"])
    elif kind == "smudge":
        a, b, top, bottom = mask.boxes[p["letter"]]
        cu, cv = (a + b) / 2, (top + bottom) / 2
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
