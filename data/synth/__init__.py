"""Synthetic MILAN eraser captures in exactly the delivered format, in several looks.

This is the product's embedded demo data and the data of every test. Each eraser is rendered
from a handful of random choices drawn from ``np.random.default_rng([seed, index])``, so a
data set is byte-identical for a seed whatever the worker count. All geometry lives in
normalised coordinates (the crop spans ``[-1, 1]`` on both axes), so the same eraser renders
at 310 px or at 32 px for tests.

What is rendered:

* a rounded-square eraser (white, blue or pink; each colour reflects differently under the
  GRAY/AM/G/R/W illuminations) on a dark, textured conveyor belt, with position jitter, a
  small rotation and sometimes a neighbouring eraser intruding at the crop border;
* the dark "MILAN 430" logo printed diagonally across the top surface (other product lines:
  other angles, per-pack turns, a second line, sizes, places, ink, colours, belt and light,
  subtler defects; :mod:`data.synth.style` and its ``PRESETS``);
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
    truth/style.json             the look it was made with
    images/<ID>_<CH>.png         with png=True
    arrays.zip / images.zip      with zip_arrays / zip_images

One module per part: ``style`` (the looks), ``geometry``, ``logo``, ``print_defects``,
``physical`` (defects), ``scene`` (the random choices of one eraser), ``render`` and
``writer`` (a whole delivery). ``python make_synthetic.py OUT_DIR --n 1500 --preset corner``
writes a data set from the terminal.
"""

from .logo import LINE_GAP
from .physical import PHYSICAL_KINDS
from .print_defects import PRINT_KINDS
from .render import EraserInfo, render_eraser
from .scene import SEVERITIES
from .style import HELD_OUT, PRESETS, SUITE, Style, preset, style_from_dict
from .writer import (
    STYLE_JSON,
    TRUTH_CSV,
    OutputExistsError,
    SynthSummary,
    generate,
    make_ids,
    plan_labels,
)

LOGO_TEXT = Style().text[0]

__all__ = [
    "HELD_OUT",
    "LINE_GAP",
    "LOGO_TEXT",
    "PHYSICAL_KINDS",
    "PRESETS",
    "PRINT_KINDS",
    "SEVERITIES",
    "STYLE_JSON",
    "SUITE",
    "TRUTH_CSV",
    "EraserInfo",
    "OutputExistsError",
    "Style",
    "SynthSummary",
    "generate",
    "make_ids",
    "plan_labels",
    "preset",
    "render_eraser",
    "style_from_dict",
]
