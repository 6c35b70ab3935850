"""Coordinates and shapes shared by the scene's parts (normalised: the crop spans [-1, 1])."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x to the right, y down)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    return np.broadcast_to(c[None, :], (size, size)), np.broadcast_to(c[:, None], (size, size))


def to_local(
    x: np.ndarray, y: np.ndarray, centre: tuple[float, float], angle: float
) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates -> coordinates of a frame at ``centre`` rotated by ``angle``."""
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    dx, dy = x - np.float32(centre[0]), y - np.float32(centre[1])
    return c * dx + s * dy, -s * dx + c * dy


def rounded_square_sdf(a: np.ndarray, b: np.ndarray, half: float, radius: float) -> np.ndarray:
    """Signed distance to a rounded square (negative inside)."""
    qa, qb = np.abs(a) - (half - radius), np.abs(b) - (half - radius)
    outside = np.hypot(np.maximum(qa, 0), np.maximum(qb, 0))
    return outside + np.minimum(np.maximum(qa, qb), 0) - radius


def smoothstep(t: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, a smooth S in between."""
    t = np.clip(t, 0, 1)
    return t * t * (3 - 2 * t)


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))
