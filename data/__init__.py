"""Data layer: load, validate, split, cache and augment MILAN eraser captures."""

from data.augment import AugmentConfig, build_augmenter
from data.channels import CHANNEL_SETS, CHANNELS, CLASS_CODES, NATIVE_SIZE, channel_indices
from data.dataset import EraserSet, format_summary, load_data, scan
from data.errors import DataError, Problem, format_problems
from data.pipeline import DeviceBatches, EraserDataset, Preprocessor, channel_stats
from data.split import Split, SplitError, k_for_fraction, make_split

__all__ = [
    "CHANNELS", "CHANNEL_SETS", "CLASS_CODES", "NATIVE_SIZE", "AugmentConfig", "DataError",
    "DeviceBatches", "EraserDataset", "EraserSet", "Preprocessor", "Problem", "Split",
    "SplitError", "build_augmenter", "channel_indices", "channel_stats", "format_problems",
    "format_summary", "k_for_fraction", "load_data", "make_split", "scan",
]
