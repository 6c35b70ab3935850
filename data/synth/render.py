"""From a scene to the six captures: geometry, belt, materials, ink, relief shading (NORMAL),
lighting and sensor noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model.channels import CHANNELS, CLASS_CODES, NATIVE_SIZE

from .geometry import grid, rounded_square_sdf, smoothstep, to_local
from .logo import clean_texture, prefilter, sample
from .logo import logo as logo_mask
from .physical import crack_profile, eraser_sdf
from .print_defects import print_texture
from .scene import SEVERITIES, Scene, draw_scene, pack_pose
from .style import Style

# Heights are in normalised units (the crop is 2 wide); slopes are therefore size-free.
_ERASER_HEIGHT = 0.05
_BEVEL = 0.03  # width of the rounded top edge
_INK_HEIGHT = 0.00004  # a film of ink: next to no relief, hence nearly invisible in NORMAL
_LIGHT = np.array([-0.62, -0.36, 0.70], np.float32) / np.linalg.norm([-0.62, -0.36, 0.70])
_NORMAL_GAIN = 330.0  # DN per unit of shading change

DEFAULT_STYLE = Style()


@dataclass(frozen=True)
class EraserInfo:
    """Ground truth of one rendered eraser."""

    label: str  # clean "X_Y"
    print_kind: str  # "" when the print is fine
    physical_kind: str  # "" when the eraser is sound
    severity: str  # "subtle" | "obvious" | "" for a good eraser
    colour: str
    neighbour: bool


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


def _ink(a: np.ndarray, b: np.ndarray, sc: Scene, size: int) -> np.ndarray:
    """Ink coverage in [0, 1] at each pixel: the (possibly defective) logo texture."""
    mask = logo_mask(sc.text)
    pp = sc.pp
    lcx, lcy = sc.logo_centre
    angle = sc.logo_angle
    if sc.print_kind == "shifted":
        lcx, lcy, angle = lcx + pp["dx"], lcy + pp["dy"], angle + pp["dangle"]
    if sc.print_kind in ("", "shifted"):
        tex = clean_texture(sc.text, sc.nominal_length, size)
    else:
        k = mask.text_w / sc.logo_len
        tex = prefilter(print_texture(mask, sc.print_kind, pp), k * 2.0 / size)
    return sample(tex, mask, a, b, (lcx, lcy), angle, sc.logo_len)


# One pass over the six illuminations (about 100 lines): each channel's formula sits next to
# the others so that their differences (what NORMAL shows and the colours do not) stay visible.
def render(sc: Scene, size: int, logo: bool = True) -> np.ndarray:
    """Render a scene into a ``(size, size, 6)`` uint8 array."""
    rng = np.random.default_rng(sc.noise_seed)
    x, y = grid(size)
    px = 2.0 / size
    f32 = np.float32

    # Geometry: eraser, optional neighbour, coverage (anti-aliased) and height map.
    a, b = to_local(x, y, sc.centre, sc.angle)
    sdf = eraser_sdf(a, b, sc.half, sc.radius, sc.physical_kind, sc.php)
    cov = np.clip(f32(0.5) - sdf * f32(1 / px), 0, 1)
    height = f32(_ERASER_HEIGHT) * smoothstep(sdf * f32(-1 / _BEVEL))
    cov_n = None
    if sc.neighbour is not None:
        ncx, ncy, nh, nang, _ = sc.neighbour
        na, nb = to_local(x, y, (ncx, ncy), nang)
        nsdf = rounded_square_sdf(na, nb, nh, sc.radius)
        cov_n = np.clip(f32(0.5) - nsdf * f32(1 / px), 0, 1) * (1 - cov)
        height = np.maximum(height, f32(_ERASER_HEIGHT) * smoothstep(nsdf * f32(-1 / _BEVEL)))

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

    layers = _Layers(1 + f32(0.12) * streak + f32(0.06) * grain, sc.belt)
    if cov_n is not None:
        layers.over(cov_n, sc.neighbour[4])
    layers.over(cov, sc.refl, tint=1 + f32(0.015) * grain)  # faint mottling of the rubber

    # Physical defects that are not part of the outline.
    ao = None
    residue = None
    kind, php = sc.physical_kind, sc.php
    if kind == "crack":
        groove = crack_profile(x, y, php, sc.centre, sc.angle, px) * cov
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
        height += f32(php["bump"]) * smoothstep((field_ - f32(0.3)) * f32(2)) * cov
        layers.over(f32(php["mix"]) * residue, php["colour"])

    # Ink: the (possibly defective) logo texture, warped onto the eraser's top.
    ink = None
    if logo:
        ink = _ink(a, b, sc, size) * cov
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
    style: Style = DEFAULT_STYLE,
    pack_size: int = 8,
) -> tuple[np.ndarray, EraserInfo]:
    """Render eraser ``index`` of data set ``seed`` with clean label ``label`` in ``style``.

    Returns the ``(size, size, 6)`` uint8 array and its ground truth. Defect kinds and
    severity are drawn from the eraser's own RNG unless given. The base eraser (colour, pose,
    lighting, sensor noise) depends only on ``(seed, index)`` and the style (and its pack,
    ``index // pack_size``, for the logo's pose), so renders that differ only in label,
    kinds or ``logo`` differ only by that defect or by the ink: tests rely on this.
    """
    if label not in CLASS_CODES:
        raise ValueError(f"unknown label {label!r}; known: {CLASS_CODES}")
    if severity is not None and severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}; known: {SEVERITIES}")
    rng = np.random.default_rng([seed, index])
    sc = draw_scene(rng, label, print_kind, physical_kind, severity, style,
                    pack_pose(seed, index // pack_size, style))
    info = EraserInfo(
        label, sc.print_kind, sc.physical_kind, sc.severity, sc.colour, sc.neighbour is not None
    )
    return render(sc, size, logo), info
