"""Data layer: load, validate, split, cache and augment MILAN eraser captures.

Names are imported lazily (PEP 562), so that light entry points such as ``python -m
data.synth`` or ``python check_data.py --dry-run`` do not pay for torch and kornia.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "AugmentConfig": "data.augment", "build_augmenter": "data.augment",
    "EraserSet": "data.dataset", "format_summary": "data.dataset", "load_data": "data.dataset",
    "scan": "data.dataset",
    "DataError": "data.errors", "Problem": "data.errors", "format_problems": "data.errors",
    "DeviceBatches": "data.pipeline", "EraserDataset": "data.pipeline",
    "Preprocessor": "data.pipeline", "TrainData": "data.pipeline",
    "channel_stats": "data.pipeline",
    "Split": "data.split", "SplitError": "data.split", "k_for_fraction": "data.split",
    "make_split": "data.split",
}

__all__ = [  # noqa: RUF022 (grouped by module, as above)
    "AugmentConfig", "build_augmenter",
    "EraserSet", "format_summary", "load_data", "scan",
    "DataError", "Problem", "format_problems",
    "DeviceBatches", "EraserDataset", "Preprocessor", "TrainData", "channel_stats",
    "Split", "SplitError", "k_for_fraction", "make_split",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'data' has no attribute {name!r}")


if TYPE_CHECKING:  # static analysers see the real names
    from data.augment import AugmentConfig, build_augmenter
    from data.dataset import EraserSet, format_summary, load_data, scan
    from data.errors import DataError, Problem, format_problems
    from data.pipeline import (
        DeviceBatches,
        EraserDataset,
        Preprocessor,
        TrainData,
        channel_stats,
    )
    from data.split import Split, SplitError, k_for_fraction, make_split
