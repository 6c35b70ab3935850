"""The six illumination channels of a MILAN eraser capture, in array order."""

from __future__ import annotations

CHANNELS: tuple[str, ...] = ("GRAY", "AM", "G", "R", "W", "NORMAL")
"""Channel order of every ``(H, W, 6)`` array and of the ``<ID>_<CH>.png`` files."""

NATIVE_SIZE = 310
"""Side length in pixels of the delivered captures."""

# Named channel subsets the search can choose from. NORMAL carries surface relief (physical
# defects) and almost no ink; the colour captures carry the print.
CHANNEL_SETS: dict[str, tuple[str, ...]] = {
    "all": CHANNELS,
    "no_normal": ("GRAY", "AM", "G", "R", "W"),
    "gray_normal": ("GRAY", "NORMAL"),
    "gray_w_normal": ("GRAY", "W", "NORMAL"),
}

# Multi-class label strings "X_Y": X = print error, Y = physical defect.
CLASS_CODES: tuple[str, ...] = ("0_0", "0_1", "1_0", "1_1")


def channel_indices(names: tuple[str, ...] | list[str]) -> list[int]:
    """Positions of ``names`` in :data:`CHANNELS`; raises ``ValueError`` on an unknown name."""
    unknown = [n for n in names if n not in CHANNELS]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; known: {list(CHANNELS)}")
    return [CHANNELS.index(n) for n in names]
