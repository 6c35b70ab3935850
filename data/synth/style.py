"""How a delivery looks: the product line's layout, colours and lighting, as a ``Style``.

Real deliveries differ from any one generator: the logo's angle, placement, size and text
change between product lines and packs, erasers come in other colours and tints, belts and
lighting differ, and defects can be subtler. A :class:`Style` holds every such choice, and
:data:`PRESETS` names the ones the benchmark suite is made of (``bench/suite.py``), so that
no default of the product is tuned to one look. ``default`` is the look the generator has
always had (same seed, same bytes).

Lengths are in normalised crop units (the crop spans ``[-1, 1]``), angles in degrees.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

# Reflectance per colour illumination (GRAY, AM, G, R, W). The colours differ per channel so
# that a model can tell them apart, and so that a blue eraser is dark under amber/red light.
PALETTE: dict[str, tuple[float, ...]] = {
    "white": (0.80, 0.84, 0.80, 0.86, 0.88),
    "blue": (0.40, 0.22, 0.44, 0.15, 0.48),
    "pink": (0.66, 0.76, 0.44, 0.84, 0.72),
    "grey": (0.52, 0.54, 0.52, 0.55, 0.58),
    "green": (0.42, 0.30, 0.60, 0.24, 0.54),
    "yellow": (0.76, 0.86, 0.78, 0.88, 0.66),
}
INK_BLUE_BLACK = (0.07, 0.05, 0.07, 0.05, 0.09)
INK_RED = (0.16, 0.34, 0.08, 0.42, 0.20)  # dark under green light, pale under red
BELT_DARK = (0.10, 0.11, 0.09, 0.12, 0.13)
BELT_GREY = (0.24, 0.25, 0.24, 0.26, 0.27)


@dataclass(frozen=True)
class Style:
    """Every choice that makes one product line's erasers look the way they do."""

    name: str = "default"
    text: tuple[str, ...] = ("MILAN 430",)  # one entry per printed line
    logo_angle: float = -45.0  # relative to the eraser; -45 runs bottom-left to top-right
    logo_jitter: float = 3.0  # per eraser, uniform +-
    pack_angle: float = 0.0  # per pack of erasers, uniform +- (packs are printed together)
    pack_turns: tuple[int, ...] = (0,)  # quarter turns a pack may lie at on the belt
    logo_length: tuple[float, float] = (1.25, 1.40)  # width of the widest line
    logo_offset: tuple[float, float] = (0.0, 0.0)  # logo centre on the eraser
    logo_wander: float = 0.03  # per eraser, uniform +- on both axes
    colours: tuple[str, ...] = ("white", "blue", "pink")  # names in PALETTE
    tint: tuple[float, float] = (0.96, 1.04)  # per-channel reflectance factor per eraser
    ink: tuple[float, ...] = INK_BLUE_BLACK
    belt: tuple[float, ...] = BELT_DARK
    gain: tuple[float, float] = (0.95, 1.05)  # exposure per channel per eraser
    gradient: float = 0.06  # illumination gradient per channel, uniform +-
    neighbour_rate: float = 0.15  # share of crops a neighbouring eraser intrudes into
    defect_scale: float = 1.0  # sizes of defects; below 1, subtler than the default's
    subtle_rate: float | None = None  # share of subtle defects; None: about half

    def __post_init__(self) -> None:
        unknown = [c for c in self.colours if c not in PALETTE]
        if unknown or not self.colours:
            raise ValueError(f"style {self.name!r}: unknown colour(s) {unknown}; known: "
                             f"{sorted(PALETTE)}")
        if not self.text or not all(line.strip() for line in self.text):
            raise ValueError(f"style {self.name!r}: the logo needs at least one printed line")
        if not all(t in (0, 1, 2, 3) for t in self.pack_turns) or not self.pack_turns:
            raise ValueError(f"style {self.name!r}: pack_turns are quarter turns 0-3")
        if not 0 < self.logo_length[0] <= self.logo_length[1]:
            raise ValueError(f"style {self.name!r}: logo_length must be 0 < low <= high")
        if self.defect_scale <= 0:
            raise ValueError(f"style {self.name!r}: defect_scale must be positive")
        if self.subtle_rate is not None and not 0 <= self.subtle_rate <= 1:
            raise ValueError(f"style {self.name!r}: subtle_rate must be between 0 and 1")

    @property
    def nominal_length(self) -> float:
        """The middle logo width, which the cached clean texture is pre-filtered for."""
        return (self.logo_length[0] + self.logo_length[1]) / 2

    def to_dict(self) -> dict:
        """Plain data (JSON), e.g. for a delivery's ``truth/style.json``."""
        return asdict(self)


PRESETS: dict[str, Style] = {
    style.name: style for style in (
        Style(),
        # a straight logo across the middle; packs lie either way round; paler belt
        Style(name="horizontal", logo_angle=0.0, logo_jitter=2.0, pack_turns=(0, 2),
              logo_length=(1.0, 1.15), colours=("white", "grey", "green"), belt=BELT_GREY),
        # the other diagonal, two lines, each pack printed at its own angle, strong tints
        Style(name="two_line", text=("MILAN", "430"), logo_angle=45.0, pack_angle=12.0,
              logo_length=(0.72, 0.86), colours=("pink", "yellow", "blue"),
              tint=(0.9, 1.1)),
        # a small logo near one corner, red ink, dim and uneven light, subtler defects
        Style(name="corner", logo_angle=-15.0, logo_length=(0.55, 0.68),
              logo_offset=(0.22, -0.30), logo_wander=0.05, colours=("white", "yellow"),
              ink=INK_RED, gain=(0.72, 0.85), gradient=0.12, defect_scale=0.8),
        # kept out of every choice of defaults: reported apart (bench/suite.py --held-out)
        Style(name="quarter_turns", text=("MILAN 430", "DUST FREE"), logo_angle=-30.0,
              pack_turns=(0, 1, 2, 3), logo_length=(1.0, 1.15), colours=("white", "green"),
              neighbour_rate=0.3),
        Style(name="faint", defect_scale=0.65, subtle_rate=0.7, gain=(1.0, 1.12),
              colours=("white", "pink", "grey"), tint=(0.93, 1.07)),
    )
}
SUITE: tuple[str, ...] = ("default", "horizontal", "two_line", "corner")
"""The presets every default of the product is chosen and reported on."""
HELD_OUT: tuple[str, ...] = ("quarter_turns", "faint")
"""Presets no default is ever chosen on: reported separately, as a check of generality."""


def preset(name: str) -> Style:
    """The :data:`PRESETS` entry ``name`` (``ValueError`` naming the known ones if none)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None


def style_from_dict(d: dict) -> Style:
    """Inverse of :meth:`Style.to_dict` (lists back to tuples)."""
    known = {f.name for f in fields(Style)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown style field(s) {unknown}")
    return replace(Style(), **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
