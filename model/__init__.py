"""CNN config and builder, losses, metrics, the ``.pth`` format and loading for inference.

Pure torch/numpy/scikit-learn: this package imports neither optuna nor the project's ``data``.
Typical use::

    import model
    m = model.load("team.pth")               # InspectionModel, eval mode
    probs = model.predict(m, images)         # (N, 4) in model.PROB_NAMES order
"""

from .checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    load,
    load_checkpoint,
    make_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from .config import SOURCE_CHANNELS, TASKS, CNNConfig
from .inference import InspectionModel, predict, preprocess_raw, resize_raw
from .losses import class_weight_from_targets, make_loss, pos_weight_from_targets
from .metrics import (
    GRADED,
    PROB_NAMES,
    ThresholdPolicy,
    choose_threshold,
    choose_thresholds,
    confusion,
    evaluate,
    probabilities,
    targets_to_truth,
)
from .net import build_model, complexity, describe
from .onnx import OnnxCheck, OnnxExportError, compare_onnx, export_onnx, onnx_session, run_onnx

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "GRADED",
    "PROB_NAMES",
    "SOURCE_CHANNELS",
    "TASKS",
    "CNNConfig",
    "CheckpointError",
    "InspectionModel",
    "OnnxCheck",
    "OnnxExportError",
    "ThresholdPolicy",
    "build_model",
    "choose_threshold",
    "choose_thresholds",
    "class_weight_from_targets",
    "compare_onnx",
    "complexity",
    "confusion",
    "describe",
    "evaluate",
    "export_onnx",
    "load",
    "load_checkpoint",
    "make_checkpoint",
    "make_loss",
    "model_from_checkpoint",
    "onnx_session",
    "pos_weight_from_targets",
    "predict",
    "preprocess_raw",
    "probabilities",
    "resize_raw",
    "run_onnx",
    "save_checkpoint",
    "targets_to_truth",
]
