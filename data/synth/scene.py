"""Every random choice for one eraser (a :class:`Scene`), drawn in normalised coordinates
independent of the output size; rendering it needs only the scene and the size."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import uniform
from .logo import logo
from .physical import PHYSICAL_KINDS, draw_physical
from .print_defects import PRINT_KINDS, draw_print
from .style import PALETTE, Style

SEVERITIES: tuple[str, ...] = ("subtle", "obvious")

_PACK_STREAM = 0x9ACC  # extra seed word: a pack's pose never shifts an eraser's own draws


@dataclass
class Scene:
    """Every random choice for one eraser; rendering it needs only this and the size."""

    noise_seed: int
    colour: str
    refl: np.ndarray  # (5,) eraser reflectance
    ink: np.ndarray  # (5,) ink reflectance
    belt: np.ndarray  # (5,) belt reflectance
    text: tuple[str, ...]  # the printed lines
    nominal_length: float  # the style's middle logo width (cached clean texture)
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


def pack_pose(seed: int, pack: int, style: Style) -> float:
    """The extra logo angle (degrees) of every eraser of ``pack``: a quarter turn on the belt
    and the pack's own print angle, both drawn once per pack."""
    if style.pack_turns == (0,) and style.pack_angle == 0:
        return 0.0
    rng = np.random.default_rng([seed, pack, _PACK_STREAM])
    turn = int(rng.choice(style.pack_turns))
    return 90.0 * turn + float(rng.uniform(-style.pack_angle, style.pack_angle))


def draw_scene(
    rng: np.random.Generator,
    label: str,
    print_kind: str | None,
    physical_kind: str | None,
    severity: str | None,
    style: Style,
    pack_angle: float = 0.0,
) -> Scene:
    """Draw every random choice for one eraser with clean label ``label`` in ``style``;
    ``pack_angle`` (degrees, :func:`pack_pose`) turns the logo of its whole pack."""
    # The draw order is fixed and does not depend on the label or on overrides, so the same
    # (seed, index) gives the same base eraser whatever its defects: tests compare a good
    # eraser with its defective twin, and a 1_1 eraser carries the 1_0 twin's print defect.
    # A style changes what the draws mean, never how many there are.
    colours = list(style.colours)
    noise_seed = int(rng.integers(2**63))
    colour = str(rng.choice(colours))
    refl = np.array(PALETTE[colour], np.float32) * rng.uniform(*style.tint, 5)
    ink = np.array(style.ink, np.float32) * rng.uniform(0.85, 1.15)
    half = uniform(rng, 0.63, 0.69)
    radius = uniform(rng, 0.08, 0.14)
    centre = (uniform(rng, -0.06, 0.06), uniform(rng, -0.06, 0.06))
    angle = float(np.deg2rad(rng.uniform(-7, 7)))
    wander = style.logo_wander
    logo_centre = (style.logo_offset[0] + uniform(rng, -wander, wander),
                   style.logo_offset[1] + uniform(rng, -wander, wander))
    logo_angle = float(np.deg2rad(
        style.logo_angle + rng.uniform(-style.logo_jitter, style.logo_jitter) + pack_angle))
    logo_len = uniform(rng, *style.logo_length)
    neighbour = None
    has_neighbour = rng.random() < style.neighbour_rate
    side = int(rng.integers(4))
    intrude, lateral = rng.uniform(0.04, 0.18), rng.uniform(-0.5, 0.5)
    n_half = rng.uniform(0.63, 0.69)
    n_angle = float(np.deg2rad(rng.uniform(-7, 7)))
    n_refl = np.array(PALETTE[str(rng.choice(colours))], np.float32)
    if has_neighbour:
        along = 1.0 - intrude + n_half
        cx, cy = [(-along, lateral), (along, lateral), (lateral, -along), (lateral, along)][side]
        neighbour = (float(cx), float(cy), float(n_half), n_angle, n_refl)
    gain = rng.uniform(*style.gain, 6).astype(np.float32)
    grad = rng.uniform(-style.gradient, style.gradient, (6, 2)).astype(np.float32)

    drawn_severity = str(rng.choice(SEVERITIES))
    drawn_print = str(rng.choice(PRINT_KINDS))
    drawn_physical = str(rng.choice(PHYSICAL_KINDS))
    print_rng = np.random.default_rng(rng.integers(2**63))
    physical_rng = np.random.default_rng(rng.integers(2**63))

    scene = Scene(
        noise_seed=noise_seed,
        colour=colour,
        refl=refl.astype(np.float32),
        ink=ink.astype(np.float32),
        belt=np.array(style.belt, np.float32),
        text=style.text,
        nominal_length=style.nominal_length,
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
        scene.pp = draw_print(print_rng, scene.print_kind, subtle, logo(style.text),
                              style.defect_scale)
    if y_err:
        scene.physical_kind = physical_kind or drawn_physical
        scene.php = draw_physical(physical_rng, scene.physical_kind, subtle, half,
                                  style.defect_scale)
    return scene


def style_severity(seed: int, index: int, style: Style) -> str | None:
    """The severity a style with a ``subtle_rate`` gives eraser ``index`` (its own stream,
    so the base eraser stays the same whatever the rate); None: the scene's own draw."""
    if style.subtle_rate is None:
        return None
    subtle = np.random.default_rng([seed, index, 1]).random() < style.subtle_rate
    return "subtle" if subtle else "obvious"
