"""Physical defects (Y = 1): cracks, pressed residue, chipped corners, dents and outlines that
are not square, drawn per eraser in eraser-local coordinates."""

from __future__ import annotations

import numpy as np

from .geometry import rounded_square_sdf, uniform

PHYSICAL_KINDS: tuple[str, ...] = ("crack", "residue", "chip", "dent", "non_square")
"""Physical defect kinds (Y = 1)."""

DEBRIS = (  # pressed residue: grime, grey rubber, rust-brown
    (0.22, 0.20, 0.21, 0.24, 0.26),
    (0.48, 0.47, 0.48, 0.49, 0.52),
    (0.38, 0.48, 0.28, 0.52, 0.42),
)


def draw_physical(rng: np.random.Generator, kind: str, subtle: bool, half: float,
                  scale: float = 1.0) -> dict:
    """Parameters of a physical defect in eraser-local normalised coordinates; sizes times
    ``scale`` (below 1: subtler defects than the default)."""
    p: dict = {}
    if kind == "crack":
        # a persistent random walk that usually starts at an edge, where erasers crack
        length = (uniform(rng, 0.14, 0.24) if subtle else uniform(rng, 0.35, 0.6)) * scale
        p["width"] = uniform(rng, 0.004, 0.006) if subtle else uniform(rng, 0.007, 0.011)
        p["depth"] = (uniform(rng, 0.003, 0.005) if subtle else uniform(rng, 0.008, 0.014)
                      ) * scale
        p["ao"] = 0.06 if subtle else 0.18  # a groove darkens the colour captures only a bit
        paths = [random_walk(rng, length, half)]
        if not subtle and rng.random() < 0.5:
            start = paths[0][int(rng.integers(1, len(paths[0])))]
            paths.append(random_walk(rng, length * 0.5, half, start=start))
        p["paths"] = paths
    elif kind == "residue":
        r = (uniform(rng, 0.025, 0.04) if subtle else uniform(rng, 0.05, 0.09)) * scale
        c = rng.uniform(-0.65 * half, 0.65 * half, 2)
        k = int(rng.integers(3, 7))  # a lumpy, irregular smear rather than a disc
        p["blobs"] = [(c + rng.normal(0, r * 1.1, 2), r * rng.uniform(0.4, 1.0)) for _ in range(k)]
        p["colour"] = np.array(DEBRIS[int(rng.integers(len(DEBRIS)))], np.float32)
        p["mix"] = uniform(rng, 0.25, 0.4) if subtle else uniform(rng, 0.75, 1.0)
        p["bump"] = uniform(rng, 0.002, 0.004) if subtle else uniform(rng, 0.006, 0.012)
    elif kind == "chip":
        p["corner"] = (int(rng.choice([-1, 1])), int(rng.choice([-1, 1])))
        depth = (uniform(rng, 0.06, 0.1) if subtle else uniform(rng, 0.14, 0.24)) * scale
        p["da"], p["db"] = depth * rng.uniform(0.7, 1.3), depth * rng.uniform(0.7, 1.3)
        p["rough"] = [(uniform(rng, 8, 30), uniform(rng, 0, 2 * np.pi)) for _ in range(3)]
        p["rough_amp"] = depth * 0.1
    elif kind == "dent":
        p["centre"] = rng.uniform(-0.6 * half, 0.6 * half, 2)
        p["sigma"] = (uniform(rng, 0.04, 0.07) if subtle else uniform(rng, 0.07, 0.12)) * scale
        p["depth"] = (uniform(rng, 0.003, 0.005) if subtle else uniform(rng, 0.01, 0.018)
                      ) * scale
    elif kind == "non_square":
        p["mode"] = str(rng.choice(["trapezoid", "skew", "stretch"]))
        p["amount"] = float(rng.choice([-1, 1])) * (
            uniform(rng, 0.05, 0.08) if subtle else uniform(rng, 0.11, 0.18)
        ) * scale
        p["swap"] = bool(rng.random() < 0.5)  # deform along the other axis
    else:
        raise ValueError(f"unknown physical defect kind {kind!r}; known: {PHYSICAL_KINDS}")
    return p


def random_walk(
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


def eraser_sdf(a: np.ndarray, b: np.ndarray, half: float, radius: float, kind: str,
               php: dict) -> np.ndarray:
    """Outline of the eraser (``half`` side, corner ``radius``), including outline defects
    (``kind`` non-square or chip, with parameters ``php``)."""
    if kind == "non_square":
        u, v = (b, a) if php["swap"] else (a, b)
        t = php["amount"]
        if php["mode"] == "trapezoid":
            u = u / (1 + t * v / half)
        elif php["mode"] == "skew":
            u = u - t * v
        else:  # stretch: a rectangle instead of a square
            u, v = u / (1 + t / 2), v / (1 - t / 2)
        a, b = (v, u) if php["swap"] else (u, v)
    sdf = rounded_square_sdf(a, b, half, radius)
    if kind == "chip":
        sa, sb = php["corner"]
        # the cut runs from (corner - da along a) to (corner - db along b); the signed
        # distance to it is positive on the corner's side, where the eraser is removed
        # (depths count from the rounded corner: 0.6 r more, or a small chip would miss it)
        ca, cb = sa * half, sb * half
        da, db = php["da"] + 0.6 * radius, php["db"] + 0.6 * radius
        na, nb = sa * db, sb * da  # normal of the cut, pointing to the corner
        norm = float(np.hypot(na, nb))
        dist = ((a - (ca - sa * da)) * na + (b - cb) * nb) / norm
        along = (a * nb - b * na) / norm
        for freq, phase in php["rough"]:  # a broken edge is jagged, not straight
            dist = dist + php["rough_amp"] * np.sin(freq * along + phase)
        sdf = np.maximum(sdf, dist)
    return sdf


def crack_profile(x: np.ndarray, y: np.ndarray, php: dict, centre: tuple[float, float],
                  angle: float, px: float) -> np.ndarray:
    """Groove profile in [0, 1] of the crack polylines (``php``, eraser-local) of an eraser at
    ``centre`` turned by ``angle``, computed only around the crack."""
    size = x.shape[0]
    out = np.zeros((size, size), np.float32)
    # below one pixel a groove would fall between pixel centres: keep it at least ~a pixel wide
    width = max(php["width"], 0.6 * px)
    c, s = np.cos(angle), np.sin(angle)
    for path in php["paths"]:
        pts = np.stack(
            [
                c * path[:, 0] - s * path[:, 1] + centre[0],
                s * path[:, 0] + c * path[:, 1] + centre[1],
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
